//! Every page of the admin center, walked in the browser by each seeded role.

use crate::browser::{self, Browser};
use crate::common::*;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"[attach]
settings = "custom"

[features.tenant-attach]
upload = "all"

[features.endpoint-analytics]
enabled = true

[features.rbac-authority]
enforce_configmgr_rbac = false

[features.defender-reporting]
enabled = true

[features.co-management]
enabled = true
enrollment = "all"
"#;

async fn sign_in(b: &Browser, upn: &str) {
    b.fill("#upn", upn).await;
    b.fill("#password", "cloudattach-dev").await;
    b.click_nav("#signin").await;
    // The first sign-in of a person asks for consent.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if b.exists("#consent-accept").await {
            b.shot(&format!("consent-{}", upn.split('@').next().unwrap_or(upn)))
                .await;
            b.click_nav("#consent-accept").await;
            break;
        }
        if b.exists("#signed-in-as").await || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.text("#signed-in-as").await, upn, "signed in as {upn}");
}

async fn sign_out(b: &Browser) {
    b.click_nav("#signout").await;
    assert!(
        b.text("#signin-message").await.contains("signed out"),
        "the signed-out page"
    );
}

fn num(s: &str) -> u64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

fn total(w: &World, path: &str) -> u64 {
    w.get(path)["@odata.count"].as_u64().expect("@odata.count")
}

#[test]
fn the_admin_center_walked_in_a_real_browser_shows_what_the_api_holds() {
    let w = World::start();
    w.generate(600, 2303);
    w.config("public", CONFIG);
    w.apply_ok();
    let Some(b) = w.rt.block_on(browser::start()) else {
        return;
    };
    let base = w.base.clone();
    let url = |p: &str| format!("{base}{p}");
    let devices_total = total(&w, "/api/v1/devices?$top=1");
    assert!(devices_total > 100, "the site attached: {devices_total}");
    let overview = w.get("/api/v1/overview");
    let hid = overview["hierarchies"][0]["hierarchy_id"]
        .as_str()
        .expect("a hierarchy")
        .to_string();

    // No session: the sign-in page of the tenant's identity service, then back where we were.
    w.rt.block_on(async {
        b.goto(&url("/admin/devices")).await;
        assert!(b.url_now().await.contains("/oauth2/v2.0/authorize"));
        b.shot("01-sign-in").await;
        sign_in(&b, "admin@contoso.example").await;
        assert!(
            b.url_now().await.ends_with("/admin/devices"),
            "returned to Devices"
        );
    });

    // Home: the tenant, its hierarchy, the counts the API has.
    w.rt.block_on(async {
        b.goto(&url("/admin/")).await;
        assert_eq!(b.text("#tenant-name").await, "Contoso");
        assert_eq!(num(&b.text("#hierarchy-count").await), 1);
        assert_eq!(num(&b.text(".devices-uploaded").await), devices_total);
        assert_eq!(b.text("#use-intune-rbac").await, "Off");
        assert!(
            b.text(".authority")
                .await
                .contains("Configuration Manager and Intune")
        );
        assert!(b.exists(".health").await, "the connector's health");
        b.shot("02-home").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "02-home: {p:?}");
    });

    // Devices: the count, a page, the next page, a search.
    let second_page = w.get("/api/v1/devices?$top=50&$skiptoken=50");
    let wanted = second_page["value"][3]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix: String = wanted
        .chars()
        .take(wanted.len().saturating_sub(1))
        .collect();
    let prefix_total = total(
        &w,
        &format!("/api/v1/devices?$top=1&name={}", prefix.replace('-', "%2D")),
    );
    w.rt.block_on(async {
        b.goto(&url("/admin/devices")).await;
        assert_eq!(num(&b.text("#device-total").await), devices_total);
        assert_eq!(b.count("#devices tbody tr").await, 50);
        assert_eq!(
            num(&b.text("#page-count").await),
            devices_total.div_ceil(50)
        );
        b.shot("03-devices").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "03-devices: {p:?}");
        b.click_nav("#next-page").await;
        assert_eq!(b.text("#page-number").await, "2");
        let second = b
            .text("#devices tbody tr:nth-child(4) td:first-child")
            .await;
        assert_eq!(second, wanted, "page 2 shows the API's page 2");
        b.fill("#q", &prefix).await;
        b.click_nav("#apply-filters").await;
        assert_eq!(num(&b.text("#device-total").await), prefix_total);
        let names = b.text("#devices tbody").await;
        assert!(
            names.contains(&wanted),
            "the search finds {wanted}: {names}"
        );
        b.shot("04-devices-search").await;
        // The export: every device the filters select, not a page of them.
        let csv = b.fetch_text("/admin/devices.csv").await;
        assert_eq!(
            csv.lines().count() as u64,
            devices_total + 1,
            "a header and every device"
        );
        assert!(csv.starts_with("hierarchy_id,resource_id,name,"));
        assert!(csv.contains(&wanted));
        let filtered = b
            .fetch_text(&format!("/admin/devices.csv?q={prefix}"))
            .await;
        assert_eq!(filtered.lines().count() as u64, prefix_total + 1);
    });

    // Filters and sorting, server-side: the same counts and order as the API.
    let comanaged = total(&w, "/api/v1/devices?$top=1&comanagement=comanaged");
    let ineligible = total(&w, "/api/v1/devices?$top=1&eligibility=ineligible");
    let last_by_name = w.get("/api/v1/devices?$top=1&$orderby=name%20desc")["value"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    w.rt.block_on(async {
        b.goto(&url("/admin/devices")).await;
        b.choose("#comanagement", "comanaged").await;
        b.click_nav("#apply-filters").await;
        assert_eq!(num(&b.text("#device-total").await), comanaged);
        b.goto(&url("/admin/devices?eligibility=ineligible")).await;
        assert_eq!(num(&b.text("#device-total").await), ineligible);
        assert!(b.text("#devices tbody").await.contains("Not eligible"));
        b.goto(&url("/admin/devices")).await;
        b.click_nav("#devices thead th:first-child a").await;
        b.click_nav("#devices thead th:first-child a").await;
        assert_eq!(
            b.text("#devices tbody tr:first-child td:first-child").await,
            last_by_name,
            "sorted by name, descending"
        );
    });

    // One device: its page, then an action served by the site's connector.
    let first = &w.get("/api/v1/devices?$top=1")["value"][0];
    let rid = first["resource_id"].as_i64().unwrap();
    let name = first["name"].as_str().unwrap().to_string();
    w.rt.block_on(async {
        b.goto(&url(&format!("/admin/hierarchies/{hid}/devices/{rid}")))
            .await;
        assert_eq!(b.text("main h1").await, name);
        assert!(!b.text("#eligibility-class").await.is_empty());
        b.click("#why-panel summary").await;
        assert!(b.text("#why-panel").await.contains("Intune role"));
        b.shot("05-device").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "05-device: {p:?}");
    });

    // Endpoint analytics, antivirus, co-management: the API's numbers.
    let ea = w.get("/api/v1/reports/endpoint-analytics");
    let unhealthy = total(&w, "/api/v1/reports/defender/unhealthy-endpoints?$top=1");
    let malware = total(&w, "/api/v1/reports/defender/active-malware?$top=1");
    let cm = w.get("/api/v1/comanagement/devices?$top=1");
    let ea_devices = total(&w, "/api/v1/reports/endpoint-analytics/devices?$top=1");
    let agent_rows = w.get("/api/v1/reports/defender/antivirus-agent-status?$top=1");
    let agent_name = agent_rows["value"][0]["device_name"]
        .as_str()
        .unwrap()
        .to_string();
    let agent_named = total(
        &w,
        &format!("/api/v1/reports/defender/antivirus-agent-status?$top=1&name={agent_name}"),
    );
    w.rt.block_on(async {
        b.goto(&url("/admin/endpoint-analytics")).await;
        assert_eq!(
            num(&b.text("#ea-enrolled").await),
            ea["enrolled_devices"].as_u64().unwrap()
        );
        assert_eq!(
            num(&b.text("#ea-reporting").await),
            ea["reporting_devices"].as_u64().unwrap()
        );
        assert!(b.exists("#ea-overall svg").await, "the score gauge");
        assert_eq!(num(&b.text("#ea-device-total").await), ea_devices);
        assert_eq!(
            b.count("#ea-devices tbody tr").await as u64,
            ea_devices.min(50)
        );
        b.shot("06-endpoint-analytics").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "06-endpoint-analytics: {p:?}");

        b.goto(&url("/admin/antivirus")).await;
        assert_eq!(num(&b.text("#report-total").await), unhealthy);
        assert!(b.exists("#antivirus-summary svg").await);
        b.shot("07-antivirus").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "07-antivirus: {p:?}");
        b.goto(&url("/admin/antivirus?report=active-malware")).await;
        assert_eq!(num(&b.text("#report-total").await), malware);
        b.goto(&url("/admin/antivirus?report=antivirus-agent-status"))
            .await;
        b.fill("#device-q", &agent_name).await;
        b.click_nav("#main form.filters button").await;
        assert_eq!(num(&b.text("#report-total").await), agent_named);
        assert!(b.text("#report tbody").await.contains(&agent_name));

        b.goto(&url("/admin/comanagement")).await;
        assert_eq!(
            num(&b.text("#funnel-enrolled").await),
            cm["summary"]["comanaged"].as_u64().unwrap_or(0)
        );
        assert!(b.exists("#funnel svg").await);
        b.shot("08-comanagement").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "08-comanagement: {p:?}");
    });

    // Tenant administration: the toggle changes the effective authority Home shows.
    w.rt.block_on(async {
        b.goto(&url("/admin/tenant")).await;
        b.shot("09-tenant-administration").await;
        let p = b.a11y_problems().await;
        assert!(p.is_empty(), "09-tenant-administration: {p:?}");
        b.click("#use-intune-rbac").await;
        b.click_nav("#save-rbac").await;
        b.goto(&url("/admin/")).await;
        assert_eq!(b.text("#use-intune-rbac").await, "On");
        assert!(b.text(".authority").await.contains("Intune only"));
    });
    assert_eq!(w.get("/api/v1/tenant/settings")["use_intune_rbac"], true);

    // An action from the device page: pending, then the connector answers and the page shows
    // the result without a reload.
    w.rt.block_on(async {
        b.goto(&url(&format!("/admin/hierarchies/{hid}/devices/{rid}")))
            .await;
        b.click_nav("#run-resource-explorer").await;
        assert!(b.exists(".action-result[data-final=\"false\"]").await);
    });
    w.cli(&["connect", "--once"]).ok();
    w.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.exists(".action-result[data-final=\"true\"]").await {
            assert!(
                Instant::now() < deadline,
                "the result never arrived on the page"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = b.text(".action-result").await;
        assert!(r.contains("succeeded"), "{r}");
        assert!(r.contains(&name), "the result shows the device: {r}");
        b.shot("10-device-action").await;
    });

    // At a phone's width.
    w.rt.block_on(async {
        b.set_size(390, 844).await;
        b.goto(&url("/admin/devices")).await;
        assert_eq!(num(&b.text("#device-total").await), devices_total);
        b.shot("11-devices-phone").await;
        b.set_size(1440, 900).await;
        sign_out(&b).await;
    });

    // The other roles: help desk and read-only read; only the administrators change the
    // toggle; an account without a role sees why.
    for (upn, shot) in [
        ("helpdesk@contoso.example", "12-helpdesk-tenant"),
        ("readonly@contoso.example", "13-readonly-tenant"),
    ] {
        w.rt.block_on(async {
            b.goto(&url("/admin/signin")).await;
            sign_in(&b, upn).await;
            assert_eq!(num(&b.text(".devices-uploaded").await), devices_total);
            b.goto(&url("/admin/tenant")).await;
            assert!(b.text("#rbac-why").await.contains(upn));
            b.shot(shot).await;
            sign_out(&b).await;
        });
    }
    w.rt.block_on(async {
        b.goto(&url("/admin/signin")).await;
        sign_in(&b, "user@contoso.example").await;
        assert!(b.text("#no-role").await.contains("user@contoso.example"));
        b.shot("14-no-role").await;
        sign_out(&b).await;

        // An administrator gives that account an Intune role; it reads the tenant from then on.
        b.goto(&url("/admin/signin")).await;
        sign_in(&b, "admin@contoso.example").await;
        b.goto(&url("/admin/tenant")).await;
        assert!(
            b.text("#apps").await.contains("Owns an attached hierarchy"),
            "the app apply registered"
        );
        b.fill("#role-user", "user@contoso.example").await;
        b.click("#role-read-only-operator").await;
        b.click_nav("#save-roles").await;
        let roles = b.text("#role-assignments").await;
        assert!(
            roles.contains("user@contoso.example") && roles.contains("Read Only Operator"),
            "{roles}"
        );
        sign_out(&b).await;
        b.goto(&url("/admin/signin")).await;
        sign_in(&b, "user@contoso.example").await;
        assert_eq!(num(&b.text(".devices-uploaded").await), devices_total);
        sign_out(&b).await;
    });
    eprintln!("screenshots: {}", b.shots.display());
    w.rt.block_on(b.close());
}

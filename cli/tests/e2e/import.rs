//! End to end: importing an existing app (`[cloud.app]`) instead of registering one.

use super::common::*;
use cloudattach_cloud::seed::CONTOSO_TENANT_ID;
use serde_json::json;

fn app_config(w: &World, client_id: &str, name: &str, uri: &str, expiry: &str) {
    w.config(
        "public",
        &format!(
            r#"[cloud.app]
tenant_id = "{CONTOSO_TENANT_ID}"
client_id = "{client_id}"
name = "{name}"
app_id_uri = "{uri}"
secret_file = "app-secret.txt"
secret_expiry = "{expiry}"

[attach]
settings = "default"
"#
        ),
    );
}

/// The happy path: an app registered by the administrator beforehand is imported and used.
#[test]
fn import_an_existing_app() {
    let w = World::start();
    let site = w.generate(500, 2303);
    let admin = w.admin_token();
    let uri = format!("api://{CONTOSO_TENANT_ID}/ImportedConfigMgr");
    let (client_id, _, secret) = w.register_app(
        &admin,
        "ImportedConfigMgr",
        &uri,
        required_permissions(),
        true,
    );
    std::fs::write(w.dir().join("app-secret.txt"), &secret).unwrap();
    app_config(&w, &client_id, "ImportedConfigMgr", &uri, "2099-12-31");

    let r = w.cli(&["--output", "json", "apply", "--yes"]);
    r.ok();
    assert!(
        !r.stdout.contains(&secret) && !r.stderr.contains(&secret),
        "the secret leaked"
    );
    let out = r.json();
    assert_eq!(out["app"]["client_id"], client_id.as_str());
    assert!(
        !std::fs::read_dir(w.state_dir()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("app-")),
        "an app was registered anyway"
    );
    for (id, s) in steps(&out) {
        assert_eq!(s["status"], "done", "{id}: {s}");
    }
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
    // No second app was registered: the tenant's apps are the seeded reader and this one.
    let (s, apps) = w.request(reqwest::Method::GET, "/v1.0/applications", &admin, None);
    assert_eq!(s, 200, "{apps}");
    let names: Vec<&str> = apps["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["displayName"].as_str())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("ConfigMgrService")),
        "{names:?}"
    );

    // A secret that expires within 30 days is a warning, not an error.
    app_config(&w, &client_id, "ImportedConfigMgr", &uri, &date_in_days(10));
    let r = w.cli(&["apply", "--yes"]);
    r.ok();
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("expires"),
        "{}",
        r.stderr
    );
}

/// `YYYY-MM-DD` of today (UTC) plus `days`.
fn date_in_days(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Howard Hinnant's civil_from_days.
    let z = now / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Each validation failure of an imported app is a configuration error (exit 2) that names the
/// problem, and nothing changes in the tenant.
#[test]
fn import_validation_failures_change_nothing() {
    let w = World::start();
    w.generate(200, 2303);
    let admin = w.admin_token();
    let uri = |name: &str| format!("api://{CONTOSO_TENANT_ID}/{name}");
    let (good, _, good_secret) = w.register_app(
        &admin,
        "GoodApp",
        &uri("GoodApp"),
        required_permissions(),
        true,
    );
    let (no_write, _, no_write_secret) = w.register_app(
        &admin,
        "NoWrite",
        &uri("NoWrite"),
        json!([
            {"resource": "api://cloudattach", "permissions": ["CmCollectionData.read"]},
            {"resource": "https://graph.microsoft.com", "permissions": ["Directory.Read.All"]}
        ]),
        true,
    );
    let (no_consent, _, no_consent_secret) = w.register_app(
        &admin,
        "NoConsent",
        &uri("NoConsent"),
        required_permissions(),
        false,
    );

    struct Case<'a> {
        what: &'a str,
        client_id: &'a str,
        name: &'a str,
        uri: String,
        secret: &'a str,
        expiry: &'a str,
        /// Words the error must contain.
        says: &'a [&'a str],
    }
    let cases = [
        Case {
            what: "bad URI",
            client_id: &good,
            name: "GoodApp",
            uri: "ftp://contoso.example/GoodApp".into(),
            secret: &good_secret,
            expiry: "2099-12-31",
            says: &["app_id_uri"],
        },
        Case {
            what: "URI of another tenant",
            client_id: &good,
            name: "GoodApp",
            uri: "api://fab41ca3-0000-4000-8000-000000000002/GoodApp".into(),
            secret: &good_secret,
            expiry: "2099-12-31",
            says: &["app_id_uri"],
        },
        Case {
            what: "missing permission",
            client_id: &no_write,
            name: "NoWrite",
            uri: uri("NoWrite"),
            secret: &no_write_secret,
            expiry: "2099-12-31",
            says: &["CmCollectionData.write"],
        },
        Case {
            what: "no admin consent",
            client_id: &no_consent,
            name: "NoConsent",
            uri: uri("NoConsent"),
            secret: &no_consent_secret,
            expiry: "2099-12-31",
            says: &["consent"],
        },
        Case {
            what: "wrong secret",
            client_id: &good,
            name: "GoodApp",
            uri: uri("GoodApp"),
            secret: "not-the-secret-of-this-app",
            expiry: "2099-12-31",
            says: &["secret"],
        },
        Case {
            what: "a name that is not the app's",
            client_id: &good,
            name: "SomeOtherName",
            uri: uri("GoodApp"),
            secret: &good_secret,
            expiry: "2099-12-31",
            says: &["SomeOtherName", "GoodApp", "name"],
        },
        Case {
            what: "expired secret",
            client_id: &good,
            name: "GoodApp",
            uri: uri("GoodApp"),
            secret: &good_secret,
            expiry: "2020-01-31",
            says: &["expired"],
        },
    ];
    for c in &cases {
        std::fs::write(w.dir().join("app-secret.txt"), c.secret).unwrap();
        app_config(&w, c.client_id, c.name, &c.uri, c.expiry);
        let r = w.cli(&["apply", "--yes"]);
        assert_eq!(
            r.code, 2,
            "{}: expected exit 2; stderr:\n{}",
            c.what, r.stderr
        );
        for word in c.says {
            assert!(
                r.stderr.contains(word),
                "{}: stderr does not say {word:?}:\n{}",
                c.what,
                r.stderr
            );
        }
        for s in [&good_secret, &no_write_secret, &no_consent_secret] {
            assert!(
                !r.stderr.contains(s.as_str()) && !r.stdout.contains(s.as_str()),
                "{}: a secret leaked",
                c.what
            );
        }
        assert!(
            w.hierarchies().is_empty(),
            "{}: a hierarchy was attached",
            c.what
        );
        assert_eq!(w.device_count(), 0, "{}: devices were uploaded", c.what);
    }
}

/// The tenant's expiry of the imported secret counts, not only attach.toml's: the earlier of the
/// two decides the warning.
#[test]
fn the_tenant_expiry_of_an_imported_secret_is_warned_of() {
    let w = World::start();
    w.generate(100, 2303);
    let admin = w.admin_token();
    let uri = format!("api://{CONTOSO_TENANT_ID}/ShortLived");
    let (client_id, object_id, long_secret) =
        w.register_app(&admin, "ShortLived", &uri, required_permissions(), true);
    // The secret in use expires in 10 days in the tenant; attach.toml says 2099.
    let soon = date_in_days(10);
    let (s, pw) = w.request(
        reqwest::Method::POST,
        &format!("/v1.0/applications/{object_id}/addPassword"),
        &admin,
        Some(&json!({"passwordCredential": {"endDateTime": format!("{soon}T12:00:00Z")}})),
    );
    assert_eq!(s, 200, "{pw}");
    let secret = pw["secretText"].as_str().unwrap().to_string();
    let (_, app) = w.request(
        reqwest::Method::GET,
        &format!("/v1.0/applications/{object_id}"),
        &admin,
        None,
    );
    for c in app["passwordCredentials"].as_array().unwrap() {
        if c["keyId"] != pw["keyId"] {
            let (s, _) = w.request(
                reqwest::Method::POST,
                &format!("/v1.0/applications/{object_id}/removePassword"),
                &admin,
                Some(&json!({"keyId": c["keyId"]})),
            );
            assert_eq!(s, 204);
        }
    }
    std::fs::write(w.dir().join("app-secret.txt"), &secret).unwrap();
    app_config(&w, &client_id, "ShortLived", &uri, "2099-12-31");
    let r = w.cli(&["apply", "--yes"]);
    r.ok();
    assert!(
        r.stderr.contains("expires in") && r.stderr.contains(&soon),
        "no warning naming {soon}:\n{}",
        r.stderr
    );
    for s in [&secret, &long_secret] {
        assert!(!r.stderr.contains(s.as_str()), "a secret leaked");
    }
}

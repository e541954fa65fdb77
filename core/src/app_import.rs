//! The offline rules of an imported app (`[cloud.app]`): reading its secret, the form of its App
//! ID URI, the days until its secret expires. A leaf module: the configuration checks them before
//! anything signs in, and the session uses them when it validates the app against the tenant.

use std::path::Path;

/// Reads an imported app's secret from its file or environment variable. The error names the
/// key, never the value.
pub fn read_secret(secret_file: Option<&Path>, secret_env: Option<&str>) -> Result<String, String> {
    let secret = match (secret_file, secret_env) {
        (Some(f), _) => std::fs::read_to_string(f)
            .map_err(|e| format!("[cloud.app] secret_file {}: {e}", f.display()))?,
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            format!("[cloud.app] secret_env: the environment variable {var} is not set")
        })?,
        (None, None) => return Err("[cloud.app] needs secret_file or secret_env".into()),
    };
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        return Err("[cloud.app] the secret is empty".into());
    }
    Ok(secret)
}

/// Checks the form of an App ID URI: `api://{tenant id}/{name}` or `https://{domain}/{name}`.
pub fn check_app_id_uri(uri: &str, tenant_id: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "[cloud.app] app_id_uri = {uri:?}: {why}; expected api://{tenant_id}/<name> or https://<verified domain>/<name>"
        ))
    };
    if let Some(rest) = uri.strip_prefix("api://") {
        let Some((tid, name)) = rest.split_once('/') else {
            return bad("no name after the tenant id");
        };
        if !tid.eq_ignore_ascii_case(tenant_id) {
            return bad("the tenant id in it is not the app's tenant_id");
        }
        if name.is_empty() || name.contains(['/', ' ', '?', '#']) {
            return bad("the name part is empty or has '/', spaces, '?' or '#'");
        }
        Ok(())
    } else if let Some(rest) = uri.strip_prefix("https://") {
        let Some((domain, name)) = rest.split_once('/') else {
            return bad("no name after the domain");
        };
        if !domain.contains('.')
            || domain.contains([' ', ':', '@'])
            || name.is_empty()
            || name.contains([' ', '?', '#'])
        {
            return bad("the domain or the name is not well formed");
        }
        Ok(())
    } else {
        bad("it must start with api:// or https://")
    }
}

/// Parses `YYYY-MM-DD` (or an RFC 3339 time) into days from today (negative = past).
pub fn days_until(expiry: &str) -> Option<i64> {
    let date = time::Date::parse(
        expiry.get(..10)?,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    let today = time::OffsetDateTime::now_utc().date();
    Some((date - today).whole_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_uris() {
        let cases: &[(&str, bool)] = &[
            ("api://t1/ConfigMgrService", true),
            ("api://T1/ConfigMgrService", true),
            ("api://t2/ConfigMgrService", false),
            ("api://t1/", false),
            ("api://t1", false),
            ("https://contoso.example/cm", true),
            ("https://localhost/cm", false),
            ("ftp://x/y", false),
        ];
        for (uri, ok) in cases {
            assert_eq!(check_app_id_uri(uri, "t1").is_ok(), *ok, "{uri}");
        }
    }

    #[test]
    fn expiry_dates() {
        assert_eq!(days_until("not a date"), None);
        assert!(days_until("2000-01-01").is_some_and(|d| d < 0));
        assert!(days_until("2999-01-01T00:00:00Z").is_some_and(|d| d > 30));
    }

    #[test]
    fn secrets_are_read_trimmed_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.txt");
        std::fs::write(&f, "  s3cret\n").unwrap();
        assert_eq!(read_secret(Some(&f), None).unwrap(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert_eq!(
            read_secret(Some(&f), None).unwrap_err(),
            "[cloud.app] the secret is empty"
        );
        let e = read_secret(None, Some("CLOUDATTACH_TEST_UNSET_VARIABLE")).unwrap_err();
        assert!(e.contains("secret_env"), "{e}");
        assert!(
            read_secret(None, None)
                .unwrap_err()
                .contains("secret_file or secret_env")
        );
    }
}

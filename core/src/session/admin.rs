//! The administrator check: the signed-in account must be a Global Administrator with an
//! Intune license.

use super::SessionError;
use crate::client::{Api, Body};
use reqwest::Method as HttpMethod;

/// Checks the signed-in account is a Global Administrator with an Intune license.
pub(super) async fn require_admin(api: &Api, token: &str) -> Result<String, SessionError> {
    let me = api
        .json(HttpMethod::GET, "/v1.0/me", Some(token), &Body::Empty)
        .await?;
    let upn = me
        .get("userPrincipalName")
        .and_then(|v| v.as_str())
        .unwrap_or("the signed-in account")
        .to_string();
    let roles: Vec<&str> = me
        .get("roles")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let is_ga = roles
        .iter()
        .any(|r| r.eq_ignore_ascii_case("Global Administrator"));
    let licensed = me
        .get("intuneLicense")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let mut missing = vec![];
    if !is_ga {
        missing.push("the Global Administrator role");
    }
    if !licensed {
        missing.push("an Intune license");
    }
    if !missing.is_empty() {
        return Err(SessionError::Input(format!(
            "{upn} cannot attach the site: it lacks {}; sign in with a Global Administrator that has an Intune license (delete .cloudattach/tokens.json to sign in as someone else)",
            missing.join(" and ")
        )));
    }
    Ok(upn)
}

//! The administrator check: the signed-in account must be a Global Administrator with an
//! Intune license.

use super::SessionError;
use super::docs::Me;
use crate::client::{Api, Body};
use reqwest::Method as HttpMethod;

/// Checks the signed-in account is a Global Administrator with an Intune license.
pub(super) async fn require_admin(api: &Api, token: &str) -> Result<String, SessionError> {
    let me: Me = api
        .doc(HttpMethod::GET, "/v1.0/me", Some(token), &Body::Empty)
        .await?;
    let upn = me
        .user_principal_name
        .unwrap_or_else(|| "the signed-in account".to_string());
    let is_ga = me
        .roles
        .iter()
        .any(|r| r.eq_ignore_ascii_case("Global Administrator"));
    let licensed = me.intune_license;
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

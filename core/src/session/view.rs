//! The cloud's view of a hierarchy, read before anything is planned: apply signs the
//! administrator in and reads the hierarchy's features with that account's own (delegated)
//! token — a Global Administrator may read the attach gateway — so nothing is registered,
//! consented or onboarded before the person has seen the plan and confirmed it.

use super::SessionError;
use super::signin::signed_in_admin;
use crate::client::{Api, Body, RetryPolicy};
use crate::config::Config;
use crate::report::Reporter;
use cloudattach_sdk::gateway::FeatureList;
use reqwest::Method as HttpMethod;
use std::collections::BTreeMap;
use tokio::runtime::Handle;

/// What the cloud holds for one hierarchy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudView {
    /// Whether the tenant knows the hierarchy (it was onboarded and not offboarded since).
    pub attached: bool,
    /// The features it has enabled, with their settings.
    pub enabled: BTreeMap<String, serde_json::Value>,
}

/// Signs the administrator in (cached token, refresh or device code) and reads what the cloud
/// holds for `hierarchy_id`. Reads only: a hierarchy the tenant does not know is an empty view.
pub fn read_cloud_view(
    handle: &Handle,
    base_url: &str,
    config: &Config,
    hierarchy_id: &str,
    reporter: &dyn Reporter,
) -> Result<CloudView, SessionError> {
    let api = Api::new(base_url, RetryPolicy::default())?;
    handle.block_on(async {
        let (tokens, _upn) = signed_in_admin(&api, config, reporter).await?;
        let path = format!("/api/v1/hierarchies/{hierarchy_id}/features");
        let list: FeatureList = match api
            .doc(
                HttpMethod::GET,
                &path,
                Some(&tokens.access_token),
                &Body::Empty,
            )
            .await
        {
            Ok(list) => list,
            Err(e) if e.status() == Some(404) => return Ok(CloudView::default()),
            Err(e) => return Err(e.into()),
        };
        Ok(CloudView {
            attached: true,
            enabled: list
                .value
                .into_iter()
                .filter(|f| f.enabled)
                .map(|f| (f.id, f.settings))
                .collect(),
        })
    })
}

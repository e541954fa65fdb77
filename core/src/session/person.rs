//! A person of the tenant, signed in for the tenant-side commands (`cloudattach tenant …`): any
//! account of the tenant (a help-desk operator, a read-only operator, an administrator), through
//! the device authorization grant, with its own token cache (`person-tokens.json`, mode 0600) so
//! that an operator's sign-in never stands in for the administrator `apply` needs, nor the other
//! way round.

use super::SessionError;
use super::docs::Me;
use super::signin::cached_sign_in;
use crate::client::{Api, ApiError, Body};
use crate::config::Config;
use crate::report::Reporter;
use reqwest::Method as HttpMethod;
use std::path::PathBuf;
use tokio::runtime::Handle;

/// Where a person's tokens are cached.
pub fn person_tokens_path(config: &Config) -> PathBuf {
    config.state_dir().join("person-tokens.json")
}

/// A signed-in person.
pub struct Person {
    handle: Handle,
    api: Api,
    token: String,
    /// The account.
    pub upn: String,
    /// Its directory roles.
    pub roles: Vec<String>,
}

impl Person {
    /// Signs in (the cached sign-in, refreshed, or a new device code; `fresh` forgets the
    /// cache first) and reads who it is. A cached token the cloud refuses leads to a new
    /// sign-in.
    pub fn sign_in(
        handle: Handle,
        base_url: &str,
        config: &Config,
        reporter: &dyn Reporter,
        fresh: bool,
    ) -> Result<Person, SessionError> {
        let api = Api::new(base_url, crate::client::RetryPolicy::default())?;
        let path = person_tokens_path(config);
        if fresh {
            let _ = std::fs::remove_file(&path);
        }
        let me = |token: String| {
            let api = &api;
            async move {
                let me: Me = api
                    .doc(HttpMethod::GET, "/v1.0/me", Some(&token), &Body::Empty)
                    .await?;
                Ok::<_, ApiError>((token, me))
            }
        };
        let (token, me) = handle.block_on(async {
            let t = cached_sign_in(&api, config, reporter, true, &path).await?;
            match me(t.access_token).await {
                Err(e) if e.status() == Some(401) => {
                    let _ = std::fs::remove_file(&path);
                    let t = cached_sign_in(&api, config, reporter, false, &path).await?;
                    me(t.access_token).await.map_err(SessionError::from)
                }
                other => other.map_err(SessionError::from),
            }
        })?;
        Ok(Person {
            handle,
            api,
            token,
            upn: me
                .user_principal_name
                .unwrap_or_else(|| "the signed-in account".into()),
            roles: me.roles,
        })
    }

    /// One call with the person's token; `path` from `/api/` or `/v1.0/` on.
    pub fn json(
        &self,
        method: HttpMethod,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, SessionError> {
        let body = match body {
            Some(b) => Body::Json(serde_json::to_vec(b).expect("json")),
            None => Body::Empty,
        };
        Ok(self
            .handle
            .block_on(self.api.json(method, path, Some(&self.token), &body))?)
    }
}

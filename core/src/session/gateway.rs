//! The attach gateway of one hierarchy, called with the app's token: onboarding and
//! offboarding, the [`CloudPort`] the plugins reach the cloud through, and the upload target of
//! the sync engine.

use super::{AppCredentials, Session, SessionError, now_secs};
use crate::client::{Api, ApiError, Body};
use crate::host::CloudPort;
use crate::site::Site;
use crate::sync_engine::{SendBatch, Sending, UploadTarget};
use cloudattach_sdk::gateway::{ChannelCensus, ChannelKeys, KeyDigest, UploadAnswer};
use cloudattach_sdk::{HostError, Method, RecordSink, SyncMode};
use reqwest::Method as HttpMethod;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

/// The gateway for one hierarchy, with the app's credentials and its cached token.
pub struct Gateway {
    handle: Handle,
    api: Arc<Api>,
    tenant: String,
    app: AppCredentials,
    app_token: Mutex<Option<(String, u64)>>,
    hierarchy_id: String,
}

impl Gateway {
    pub(super) fn new(
        handle: Handle,
        api: Arc<Api>,
        tenant: String,
        app: AppCredentials,
        hierarchy_id: String,
    ) -> Gateway {
        Gateway {
            handle,
            api,
            tenant,
            app,
            app_token: Mutex::new(None),
            hierarchy_id,
        }
    }

    fn app_bearer(&self) -> Result<String, SessionError> {
        let mut guard = self.app_token.lock().expect("token lock");
        if let Some((t, exp)) = guard.as_ref()
            && *exp > now_secs() + 300
        {
            return Ok(t.clone());
        }
        let (t, exp) = self.handle.block_on(super::app::client_credentials(
            &self.api,
            &self.tenant,
            &self.app.client_id,
            &self.app.secret,
        ))?;
        *guard = Some((t.clone(), exp));
        Ok(t)
    }

    fn path(&self, path: &str) -> String {
        if path.is_empty() {
            format!("/api/v1/hierarchies/{}", self.hierarchy_id)
        } else {
            format!(
                "/api/v1/hierarchies/{}/{}",
                self.hierarchy_id,
                path.trim_start_matches('/')
            )
        }
    }

    /// A gateway call for this hierarchy with the app's token.
    pub fn json(
        &self,
        method: HttpMethod,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, SessionError> {
        let token = self.app_bearer()?;
        let body = match body {
            Some(b) => Body::Json(serde_json::to_vec(b).expect("json")),
            None => Body::Empty,
        };
        let url = self.path(path);
        Ok(self
            .handle
            .block_on(self.api.json(method, &url, Some(&token), &body))?)
    }
}

impl UploadTarget for Gateway {
    fn prepare(&self, channel: &str) -> Result<SendBatch, HostError> {
        let token = self.app_bearer().map_err(host_error)?;
        let api = self.api.clone();
        let path = self.path(&format!("upload/{channel}"));
        Ok(Box::new(move |compressed: Vec<u8>| -> Sending {
            Box::pin(async move {
                let answer = api
                    .json(
                        HttpMethod::POST,
                        &path,
                        Some(&token),
                        &Body::JsonZstd(compressed),
                    )
                    .await
                    .map_err(|e| host_error(e.into()))?;
                Ok(serde_json::from_value::<UploadAnswer>(answer).unwrap_or_default())
            })
        }))
    }

    fn census(&self, channel: &str) -> Result<ChannelCensus, HostError> {
        match self.json(HttpMethod::GET, &format!("upload/{channel}"), None) {
            Ok(v) => serde_json::from_value(v).map_err(|e| {
                HostError::new(
                    "cloud",
                    format!("the cloud's census of {channel} is not what the gateway answers: {e}"),
                )
            }),
            // The channel's feature is not enabled (yet): the cloud holds nothing there.
            Err(SessionError::Api(e)) if e.status() == Some(409) => {
                Ok(ChannelCensus::new(channel, KeyDigest::default()))
            }
            Err(e) => Err(host_error(e)),
        }
    }

    fn held_keys(&self, channel: &str, each: &mut dyn FnMut(String)) -> Result<(), HostError> {
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                // Keys are URL-encoded: extension channels may use any characters.
                Some(a) => format!(
                    "upload/{channel}/keys?after={}",
                    url::form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>()
                ),
                None => format!("upload/{channel}/keys"),
            };
            let page: ChannelKeys = self
                .json(HttpMethod::GET, &path, None)
                .map_err(host_error)
                .and_then(|v| {
                    serde_json::from_value(v).map_err(|e| {
                        HostError::new(
                            "cloud",
                            format!("the cloud's keys of {channel} are not what the gateway answers: {e}"),
                        )
                    })
                })?;
            page.value.into_iter().for_each(&mut *each);
            match page.next_after {
                Some(a) => after = Some(a),
                None => return Ok(()),
            }
        }
    }
}

impl Session {
    /// Onboards (or updates) the hierarchy in the tenant; idempotent.
    pub fn onboard(
        &self,
        site: &Site,
        environment: cloudattach_sdk::Environment,
    ) -> Result<(), SessionError> {
        let body = serde_json::json!({
            "site_code": site.info.code,
            "site_name": site.info.name,
            "site_version": site.info.version.to_string(),
            "environment": environment.as_str(),
            "app_id": self.gateway.app.client_id,
        });
        match self.gateway_json(HttpMethod::PUT, "", Some(&body)) {
            Ok(_) => Ok(()),
            // The hierarchy belongs to another app registration of the tenant (attached from
            // another directory, or state lost): say how to get out instead of a bare 403.
            Err(SessionError::Api(e)) if e.status() == Some(403) => {
                Err(SessionError::Input(format!(
                    "hierarchy {} is attached to tenant {} with another app than {}: import that app in [cloud.app], or delete its registration in the tenant and apply again ({e})",
                    site.info.hierarchy_id, self.gateway.tenant, self.gateway.app
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the hierarchy from the tenant.
    pub fn offboard(&self) -> Result<(), SessionError> {
        match self.gateway_json(HttpMethod::DELETE, "", None) {
            Ok(_) => Ok(()),
            Err(SessionError::Api(e)) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The app in use.
    pub fn app(&self) -> &AppCredentials {
        &self.gateway.app
    }

    /// Requests sent, retries and bytes.
    pub fn client_stats(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.gateway.api.stats;
        (
            stats.requests.load(Relaxed),
            stats.retries.load(Relaxed),
            stats.bytes_sent.load(Relaxed),
        )
    }

    /// A gateway call for this hierarchy with the app's token.
    pub fn gateway_json(
        &self,
        method: HttpMethod,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, SessionError> {
        self.gateway.json(method, path, body)
    }
}

/// A session error as a plugin sees it: `http-<status>` with method, path and the cloud's
/// message, or `cloud`.
pub fn host_error(e: SessionError) -> HostError {
    match e {
        SessionError::Api(ApiError::Status {
            status,
            code,
            message,
            method,
            path,
        }) => HostError::new(
            format!("http-{status}"),
            format!("{method} {path}: {status} {code}: {message}"),
        ),
        other => HostError::new("cloud", other.to_string()),
    }
}

fn to_http(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::GET,
        Method::Put => HttpMethod::PUT,
        Method::Post => HttpMethod::POST,
        Method::Delete => HttpMethod::DELETE,
    }
}

impl CloudPort for Session {
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        self.gateway_json(to_http(method), path, body)
            .map_err(host_error)
    }

    fn open_sync(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        let expected = if channel == "devices" {
            self.expected_records
        } else {
            None
        };
        self.engine.open(
            owner,
            channel,
            mode,
            &|| self.reporter.progress(channel, expected),
            &|m| self.reporter.say(m),
        )
    }

    fn log(&self, message: &str) {
        self.reporter.say(message);
    }
}

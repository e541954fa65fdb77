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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The gateway for one hierarchy, with the app's credentials and its cached token.
pub struct Gateway {
    handle: Handle,
    api: Arc<Api>,
    tenant: String,
    app: AppCredentials,
    app_token: Mutex<Option<(String, u64)>>,
    hierarchy_id: String,
    /// Censuses asked for ahead ([`Gateway::prefetch_census`]), taken by the first
    /// [`UploadTarget::census`] of their channel.
    prefetched: Mutex<HashMap<String, JoinHandle<Result<serde_json::Value, ApiError>>>>,
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
            prefetched: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the censuses asked for ahead and not taken (a round that did not open their
    /// channels): the next round asks again.
    pub fn forget_prefetched(&self) {
        for (_, h) in self.prefetched.lock().expect("prefetch lock").drain() {
            h.abort();
        }
    }

    /// Asks for the census of each of `channels` now, all at once, so that a delta's uploads
    /// find them answered when they open (the cloud counts while the site reads its inventory).
    /// A census asked for ahead is taken by the first [`UploadTarget::census`] of its channel;
    /// one that fails is asked for again then.
    pub fn prefetch_census(&self, channels: &[String]) {
        let Ok(token) = self.app_bearer() else {
            return;
        };
        let mut prefetched = self.prefetched.lock().expect("prefetch lock");
        for channel in channels {
            let (api, token) = (self.api.clone(), token.clone());
            let url = self.path(&format!("upload/{channel}"));
            prefetched.insert(
                channel.clone(),
                self.handle.spawn(async move {
                    api.json(HttpMethod::GET, &url, Some(&token), &Body::Empty)
                        .await
                }),
            );
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
        if path.starts_with("/api/") {
            // A gateway path outside the hierarchy (`/api/v1/actions/{id}/answer`).
            path.to_string()
        } else if path.is_empty() {
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
        let get = method == HttpMethod::GET;
        let mut answer = self
            .handle
            .block_on(self.api.json(method, &url, Some(&token), &body))?;
        // A list comes in pages: a plugin reading one gets all of it, as from an unpaged list.
        while get && let Some(next) = next_page_path(&answer) {
            let page = self.handle.block_on(self.api.json(
                HttpMethod::GET,
                &next,
                Some(&token),
                &Body::Empty,
            ))?;
            merge_page(&mut answer, page);
        }
        Ok(answer)
    }
}

/// The path of a list answer's next page: its `@odata.nextLink` from `/api/` on (the pages are
/// fetched from this service, whatever host the cloud names in its links).
fn next_page_path(answer: &serde_json::Value) -> Option<String> {
    let link = answer.get("@odata.nextLink")?.as_str()?;
    link.find("/api/").map(|i| link[i..].to_string())
}

/// Appends a page's rows to `answer` and takes over its `@odata.nextLink`; an empty page ends
/// the list (so a cloud that keeps sending a link can't keep the host reading).
fn merge_page(answer: &mut serde_json::Value, page: serde_json::Value) {
    let more = page
        .get("value")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let link = page
        .get("@odata.nextLink")
        .filter(|_| !more.is_empty())
        .cloned();
    if let Some(serde_json::Value::Array(all)) = answer.get_mut("value") {
        all.extend(more);
    }
    if let Some(o) = answer.as_object_mut() {
        match link {
            Some(l) => o.insert("@odata.nextLink".into(), l),
            None => o.remove("@odata.nextLink"),
        };
    }
}

impl UploadTarget for Gateway {
    fn prepare(&self, channel: &str) -> Result<SendBatch, HostError> {
        let token = self.app_bearer().map_err(host_error)?;
        let api = self.api.clone();
        let path = self.path(&format!("upload/{channel}"));
        let channel = channel.to_string();
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
                    .map_err(|e| upload_error(&channel, e))?;
                Ok(serde_json::from_value::<UploadAnswer>(answer).unwrap_or_default())
            })
        }))
    }

    fn census(&self, channel: &str) -> Result<ChannelCensus, HostError> {
        // Taken out of the lock before waiting: the other channels take theirs meanwhile.
        let prefetched = self
            .prefetched
            .lock()
            .expect("prefetch lock")
            .remove(channel);
        let ahead = prefetched
            .and_then(|h| self.handle.block_on(h).ok())
            .and_then(Result::ok);
        let answer = match ahead {
            Some(v) => Ok(v),
            None => self.json(HttpMethod::GET, &format!("upload/{channel}"), None),
        };
        match answer {
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

    fn held_keys(&self, channel: &str, each: &mut dyn FnMut(String, u64)) -> Result<(), HostError> {
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
            let page: ChannelKeys = match self.json(HttpMethod::GET, &path, None) {
                // As for the census: the feature is not enabled (it was turned off in the tenant
                // meanwhile), so the cloud holds nothing on the channel.
                Err(SessionError::Api(e)) if e.status() == Some(409) => return Ok(()),
                r => r,
            }
            .map_err(host_error)
            .and_then(|v| {
                serde_json::from_value(v).map_err(|e| {
                    HostError::new(
                        "cloud",
                        format!(
                            "the cloud's keys of {channel} are not what the gateway answers: {e}"
                        ),
                    )
                })
            })?;
            page.value.into_iter().for_each(|r| each(r.key, r.hash));
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
            // The session checked the owner before choosing the app; another app attached the
            // hierarchy in between.
            Err(SessionError::Api(e)) if e.status() == Some(403) => {
                Err(self.lost_race(&site.info.hierarchy_id, &e))
            }
            Err(e) => Err(e),
        }
    }

    /// Another app attached the hierarchy between the owner check and onboarding: the app this
    /// run registered for it (if it registered one) is deleted again, so the tenant is not left
    /// with an app that owns nothing, and the error names the app that owns the hierarchy.
    fn lost_race(&self, hierarchy_id: &str, refused: &ApiError) -> SessionError {
        let (api, admin, app) = (&self.gateway.api, &self.admin_token, &self.gateway.app);
        let handle = &self.gateway.handle;
        let owner = handle
            .block_on(super::app::owner_label(api, admin, hierarchy_id))
            .ok()
            .flatten()
            .unwrap_or_else(|| "another app".into());
        let cleanup = match &self.registered {
            None => String::new(),
            Some(path) => {
                match handle.block_on(super::app::delete_registered(api, admin, app, path)) {
                    Ok(()) => format!(
                        "; app {app}, which this apply registered for it, was deleted again"
                    ),
                    Err(e) => format!(
                        "; app {app}, which this apply registered for it, could not be deleted ({e}): delete it in the tenant"
                    ),
                }
            }
        };
        SessionError::Input(format!(
            "hierarchy {hierarchy_id} was attached to tenant {} with app {owner} while this apply ran{cleanup}: run `cloudattach apply --takeover` to add a new secret to that app and use it from here, or import it in [cloud.app] (the cloud said: {refused})",
            self.gateway.tenant
        ))
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

/// An upload's error as a plugin sees it; a feature turned off in the tenant since the last
/// apply (the census and the keys then say the cloud holds nothing) says what to do.
fn upload_error(channel: &str, e: ApiError) -> HostError {
    match e {
        ApiError::Status {
            status: 409,
            code,
            message,
            ..
        } if code == "FeatureNotEnabled" => HostError::new(
            "http-409",
            format!(
                "{channel}: the feature of this channel is not enabled in the tenant (it was turned off there since this site last applied it): run `cloudattach apply` to enable it again, then sync (the cloud says: {message})"
            ),
        ),
        e => host_error(e.into()),
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
        // Every upload's pass reads the whole inventory (the plugin picks its records from
        // it), so each channel's bar has the same real total: the site's devices.
        self.engine.open(
            owner,
            channel,
            mode,
            &|| self.reporter.progress(channel, self.expected_records()),
            &|m| self.reporter.say(m),
        )
    }

    fn open_line_sync(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        indexed: bool,
    ) -> Result<Box<dyn crate::host::LineSink + '_>, HostError> {
        self.engine.open_lines(
            owner,
            channel,
            mode,
            indexed,
            &|| self.reporter.progress(channel, self.expected_records()),
            &|m| self.reporter.say(m),
        )
    }

    fn log(&self, message: &str) {
        self.reporter.say(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_pages_of_a_list_are_read_to_the_end() {
        let mut answer = json!({"@odata.count": 3, "value": [1],
            "@odata.nextLink": "http://cloud.example:8750/api/v1/hierarchies/h/ext/x/records?$top=1&$skiptoken=1"});
        assert_eq!(
            next_page_path(&answer).as_deref(),
            Some("/api/v1/hierarchies/h/ext/x/records?$top=1&$skiptoken=1")
        );
        merge_page(
            &mut answer,
            json!({"@odata.count": 3, "value": [2], "@odata.nextLink": "http://x/api/v1/next?$skiptoken=2"}),
        );
        assert_eq!(
            next_page_path(&answer).as_deref(),
            Some("/api/v1/next?$skiptoken=2")
        );
        merge_page(&mut answer, json!({"@odata.count": 3, "value": [3]}));
        assert_eq!(answer, json!({"@odata.count": 3, "value": [1, 2, 3]}));
        assert_eq!(next_page_path(&answer), None);
        // An empty page ends the list even if it names another.
        let mut answer = json!({"value": [1], "@odata.nextLink": "http://x/api/v1/a"});
        merge_page(
            &mut answer,
            json!({"value": [], "@odata.nextLink": "http://x/api/v1/a"}),
        );
        assert_eq!(answer, json!({"value": [1]}));
    }
}

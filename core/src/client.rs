//! The HTTP client of the cloud: retries as Microsoft's SDKs do (408, 429, 500, 502, 503, 504
//! and connection errors; `Retry-After` honoured in seconds or as an HTTP date; otherwise
//! exponential backoff with full jitter), bounded in attempts and time.

use rand::Rng;
use reqwest::{Method, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How a request is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff when the server says nothing.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// Give up when the next wait would pass this much time since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// The Azure SDK's defaults: 8 attempts, 200 ms doubling, 30 s cap; 5 minutes in all.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// An error from the cloud, after retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The cloud answered with an error.
    #[error("{method} {path}: {status} {code}: {message}")]
    Status {
        /// Request method.
        method: String,
        /// Request path (no query, no secrets).
        path: String,
        /// HTTP status.
        status: u16,
        /// The Graph-style error code.
        code: String,
        /// The message.
        message: String,
    },
    /// The cloud answered, but not with JSON (the endpoint is not a cloudattach cloud).
    #[error(
        "{method} {path}: the cloud at {base} answered with something that is not JSON ({message}); is `[cloud] endpoint` a cloudattach cloud service?"
    )]
    BadAnswer {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Base URL.
        base: String,
        /// The parse error.
        message: String,
    },
    /// The cloud answered with JSON of another shape than the endpoint's document.
    #[error(
        "{method} {path}: the cloud at {base} answered with a document of an unexpected shape ({message}); is `[cloud] endpoint` a cloudattach cloud service of this version?"
    )]
    UnexpectedAnswer {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Base URL.
        base: String,
        /// What did not fit.
        message: String,
    },
    /// The cloud could not be reached.
    #[error("{method} {path}: cannot reach the cloud at {base}: {message}")]
    Transport {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Base URL.
        base: String,
        /// What failed.
        message: String,
    },
}

impl ApiError {
    /// The HTTP status, if the cloud answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Transport { .. }
            | ApiError::BadAnswer { .. }
            | ApiError::UnexpectedAnswer { .. } => None,
        }
    }
    /// The error code (Graph-style `error.code`, or the OAuth `error`).
    pub fn code(&self) -> &str {
        match self {
            ApiError::Status { code, .. } => code,
            ApiError::Transport { .. } => "transport",
            ApiError::BadAnswer { .. } => "bad-answer",
            ApiError::UnexpectedAnswer { .. } => "unexpected-answer",
        }
    }
}

/// Counters of what the client did, for the summary and benchmarks.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Retries.
    pub retries: AtomicU64,
    /// Bytes of request bodies sent.
    pub bytes_sent: AtomicU64,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// None.
    Empty,
    /// JSON.
    Json(Vec<u8>),
    /// zstd-compressed JSON.
    JsonZstd(Vec<u8>),
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
}

/// The cloud's HTTP client.
pub struct Api {
    http: reqwest::Client,
    base: String,
    policy: RetryPolicy,
    /// Counters.
    pub stats: ClientStats,
    /// Throttling is per app per tenant, not per request: once the cloud answers with
    /// `Retry-After`, no request leaves before that instant (a request sent earlier would still
    /// count against the limit).
    throttled_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Whether a status is worth retrying.
pub fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait a `Retry-After` header asks for: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with full jitter for attempt `n` (1-based retry number).
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let cap = exp.min(policy.max_delay);
    let millis = cap.as_millis() as u64;
    // Full jitter, but never less than half: keeps retries from bunching and from hammering.
    Duration::from_millis(millis / 2 + rand::rng().random_range(0..=millis / 2))
}

impl Api {
    /// A client for the cloud at `base` (e.g. `http://127.0.0.1:8750`).
    pub fn new(base: &str, policy: RetryPolicy) -> Result<Api, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("cloudattach/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport {
                method: String::new(),
                path: String::new(),
                base: base.to_string(),
                message: e.to_string(),
            })?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            policy,
            stats: ClientStats::default(),
            throttled_until: std::sync::Mutex::new(None),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with retries and returns the successful response's status and body.
    /// `path` starts with `/`; it may carry a query. `bearer` is the access token, if any.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &Body,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let started = Instant::now();
        let url = format!("{}{}", self.base, path);
        let shown_path = path.split('?').next().unwrap_or(path).to_string();
        let mut attempt = 0u32;
        // Graph's `client-request-id`: one per request, the same on each of its retries, so the
        // cloud can tell a retry from another request.
        let request_id = uuid::Uuid::new_v4().to_string();
        loop {
            attempt += 1;
            let gate = *self.throttled_until.lock().expect("throttle lock");
            if let Some(until) = gate
                && until > tokio::time::Instant::now()
            {
                tokio::time::sleep_until(until).await;
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("client-request-id", &request_id);
            if let Some(t) = bearer {
                req = req.bearer_auth(t);
            }
            req = match body {
                Body::Empty => req,
                Body::Json(b) => {
                    self.stats
                        .bytes_sent
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    req.header("content-type", "application/json")
                        .body(b.clone())
                }
                Body::JsonZstd(b) => {
                    self.stats
                        .bytes_sent
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    req.header("content-type", "application/json")
                        .header("content-encoding", "zstd")
                        .body(b.clone())
                }
                Body::Form(fields) => req.form(fields),
            };
            let wait = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    if status.is_success() {
                        let bytes = resp
                            .bytes()
                            .await
                            .map_err(|e| self.transport(&method, &shown_path, e))?;
                        return Ok((status, bytes.to_vec()));
                    }
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let error = self.status_error(&method, &shown_path, status, &bytes);
                    if !retryable(status) || attempt >= self.policy.max_attempts {
                        return Err(error);
                    }
                    tracing::debug!(%status, attempt, ?retry_after, "retrying {method} {shown_path}");
                    if let Some(wait) = retry_after {
                        let until = tokio::time::Instant::now() + wait;
                        let mut gate = self.throttled_until.lock().expect("throttle lock");
                        if gate.is_none_or(|g| g < until) {
                            *gate = Some(until);
                        }
                    }
                    (
                        retry_after.unwrap_or_else(|| backoff(&self.policy, attempt)),
                        error,
                    )
                }
                Err(e) => {
                    let error = self.transport(&method, &shown_path, e);
                    if attempt >= self.policy.max_attempts {
                        return Err(error);
                    }
                    tracing::debug!(
                        attempt,
                        "retrying {method} {shown_path} after a connection error"
                    );
                    (backoff(&self.policy, attempt), error)
                }
            };
            let (delay, error) = wait;
            if started.elapsed() + delay > self.policy.max_elapsed {
                return Err(error);
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }

    /// Sends and parses a JSON answer (an empty body is `null`).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &Body,
    ) -> Result<serde_json::Value, ApiError> {
        let (_, bytes) = self.send(method.clone(), path, bearer, body).await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadAnswer {
            method: method.to_string(),
            path: path.split('?').next().unwrap_or(path).to_string(),
            base: self.base.clone(),
            message: e.to_string(),
        })
    }

    /// [`Api::json`], read into a typed document: an empty answer reads as an empty object (the
    /// document's defaults, for documents whose fields all have one); JSON of another shape is
    /// an `UnexpectedAnswer`.
    pub async fn doc<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &Body,
    ) -> Result<T, ApiError> {
        let v = match self.json(method.clone(), path, bearer, body).await? {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v,
        };
        serde_json::from_value(v).map_err(|e| ApiError::UnexpectedAnswer {
            method: method.to_string(),
            path: path.split('?').next().unwrap_or(path).to_string(),
            base: self.base.clone(),
            message: e.to_string(),
        })
    }

    fn transport(&self, method: &Method, path: &str, e: reqwest::Error) -> ApiError {
        // reqwest's Display may carry the URL, never headers or bodies: no token leaks.
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        ApiError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            base: self.base.clone(),
            message,
        }
    }

    fn status_error(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> ApiError {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        // Graph style {"error":{"code","message"}} or OAuth style {"error","error_description"}.
        let (code, message) = match v.get("error") {
            Some(serde_json::Value::Object(e)) => (
                e.get("code")
                    .and_then(|c| c.as_str())
                    .unwrap_or("error")
                    .to_string(),
                e.get("message")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string(),
            ),
            Some(serde_json::Value::String(code)) => (
                code.clone(),
                v.get("error_description")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string(),
            ),
            _ => (
                status.canonical_reason().unwrap_or("error").to_string(),
                String::from_utf8_lossy(body).chars().take(200).collect(),
            ),
        };
        ApiError::Status {
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            code,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(12))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = RetryPolicy::default();
        for retry in 1..=12 {
            let full = p
                .base_delay
                .saturating_mul(1 << (retry - 1))
                .min(p.max_delay);
            for _ in 0..20 {
                let d = backoff(&p, retry);
                assert!(
                    d >= full / 2 && d <= full,
                    "retry {retry}: {d:?} outside [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn retryable_statuses_are_the_azure_sdks() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 501] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}

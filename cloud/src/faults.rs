//! Fault injection, write-rate windows and the early-retry counter (like a throttled cloud).

use crate::ServeOptions;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::server::{ConnInfo, St};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The length of an Intune-like rate window.
pub const RATE_WINDOW: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    f429: AtomicU64,
    f429_bare: AtomicU64,
    f5xx: AtomicU64,
    drop: AtomicU64,
    early: AtomicU64,
    rate_limited: AtomicU64,
}

pub(crate) struct Faults {
    p429: f64,
    p429_bare: f64,
    p5xx: f64,
    pdrop: f64,
    latency: Duration,
    rate_limit: Option<u32>,
    retry_after: u64,
    rng: Mutex<ChaCha8Rng>,
    counters: Counters,
    retry_until: Mutex<HashMap<String, Instant>>,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    pub fn new(o: &ServeOptions) -> Faults {
        let rng = match o.fault_seed {
            Some(s) => ChaCha8Rng::seed_from_u64(s),
            None => ChaCha8Rng::from_rng(&mut rand::rng()),
        };
        Faults {
            p429: o.fault_429,
            p429_bare: o.fault_429_bare,
            p5xx: o.fault_5xx,
            pdrop: o.fault_drop,
            latency: Duration::from_millis(o.fault_latency_ms),
            rate_limit: o.rate_limit_writes,
            retry_after: o.fault_retry_after_secs.max(1),
            rng: Mutex::new(rng),
            counters: Counters::default(),
            retry_until: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn remember_retry_after(&self, key: &str, secs: u64) {
        let mut m = lock(&self.retry_until);
        let now = Instant::now();
        m.retain(|_, t| *t > now);
        m.insert(key.to_string(), now + Duration::from_secs(secs));
    }
}

fn throttled(retry_after: Option<u64>, message: String) -> Response {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    e.retry_after = retry_after;
    e.into_response()
}

/// The fault middleware of the API endpoints (runs after authentication).
pub(crate) async fn middleware(State(st): St, req: Request, next: Next) -> Response {
    let f = &st.faults;
    f.counters.requests.fetch_add(1, Ordering::Relaxed);
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let who = match req.extensions().get::<Caller>() {
        Some(c) => format!("{}/{}", c.tenant_id, c.client_id),
        None => conn
            .as_ref()
            .map(|c| c.peer.ip().to_string())
            .unwrap_or_default(),
    };
    // A retry is the same request sent again. Clients that tag requests with Graph's
    // `client-request-id` (kept across the retries of one request) are judged per request, so
    // other requests already in flight when a 429 went out are not counted as early retries;
    // untagged requests are judged per method and path, as Microsoft's Dev Proxy does.
    let request_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64);
    let key = match request_id {
        Some(id) => format!("{who} {} {} {id}", req.method(), req.uri().path()),
        None => format!("{who} {} {}", req.method(), req.uri().path()),
    };
    let now = Instant::now();
    if lock(&f.retry_until).get(&key).is_some_and(|t| now < *t) {
        f.counters.early.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%key, "request retried before its Retry-After ran out");
    }
    if !f.latency.is_zero() {
        tokio::time::sleep(f.latency).await;
    }
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (Some(limit), true) = (f.rate_limit, is_write) {
        let left = {
            let mut w = lock(&f.windows);
            let e = w.entry(who.clone()).or_insert((now, 0));
            if now.duration_since(e.0) >= RATE_WINDOW {
                *e = (now, 0);
            }
            if e.1 >= limit {
                Some((e.0 + RATE_WINDOW).saturating_duration_since(now))
            } else {
                e.1 += 1;
                None
            }
        };
        if let Some(left) = left {
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            let secs = secs.max(1);
            f.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            f.remember_retry_after(&key, secs);
            return throttled(
                Some(secs),
                format!(
                    "write rate limit of {limit} requests per 20 s for this app exceeded; retry in {secs} s"
                ),
            );
        }
    }
    let (d_drop, d429, d429b, d5xx, is503) = {
        let mut r = lock(&f.rng);
        (
            r.random::<f64>(),
            r.random::<f64>(),
            r.random::<f64>(),
            r.random::<f64>(),
            r.random::<bool>(),
        )
    };
    if d_drop < f.pdrop {
        f.counters.drop.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = conn {
            c.kill.notify_one();
            std::future::pending::<()>().await;
        }
        return ApiError::internal("connection dropped").into_response();
    }
    if d429 < f.p429 {
        f.counters.f429.fetch_add(1, Ordering::Relaxed);
        f.remember_retry_after(&key, f.retry_after);
        return throttled(
            Some(f.retry_after),
            "too many requests (injected fault)".into(),
        );
    }
    if d429b < f.p429_bare {
        f.counters.f429_bare.fetch_add(1, Ordering::Relaxed);
        return throttled(
            None,
            "too many requests (injected fault, no Retry-After)".into(),
        );
    }
    if d5xx < f.p5xx {
        f.counters.f5xx.fetch_add(1, Ordering::Relaxed);
        // Gateway writes are idempotent, so a 500 may come after the work was done (the client
        // can't know); Graph-style creations are not, so there the fault comes first.
        if is503 {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "service unavailable (injected fault)",
            )
            .into_response();
        }
        if req.uri().path().starts_with("/api/") {
            let _ = next.run(req).await;
        }
        return ApiError::internal(
            "internal server error (injected fault; the request may have taken effect)",
        )
        .into_response();
    }
    next.run(req).await
}

/// `GET /_emulator/stats`
pub(crate) async fn stats(State(st): St) -> Response {
    let c = &st.faults.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Json(json!({
        "requests": g(&c.requests),
        "faults": {"429": g(&c.f429), "429_bare": g(&c.f429_bare), "5xx": g(&c.f5xx), "drop": g(&c.drop)},
        "early_retries": g(&c.early),
        "rate_limited": g(&c.rate_limited),
        "device_codes": st.device_codes.len(),
    }))
    .into_response()
}

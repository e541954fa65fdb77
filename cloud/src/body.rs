//! Request bodies: size limit, content type, content encoding, strict JSON.

use crate::error::ApiError;
use crate::server::AppState;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use std::io::Read;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

/// Reads the raw body, at most `limit` bytes.
pub async fn read_raw(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && n > limit as u64
    {
        return Err(too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

/// Checks `Content-Type: application/json`.
pub fn require_json_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "Content-Type must be application/json, not {:?}",
                if ct.is_empty() { "(none)" } else { ct }
            ),
        ))
    }
}

/// Largest zstd window accepted (2^24 = 16 MiB): a frame that asks for more is refused rather
/// than making the decoder allocate up to 2 GiB.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Bytes decoded per read while inflating a body.
const DECODE_CHUNK: usize = 64 * 1024;

/// The global budget of decoded (decompressed) bytes in flight, in KiB permits: decoding grows
/// its buffer only after it took permits for it, and fails with 503 when the budget is spent
/// (never waits, so that two half-done decodes can't deadlock each other).
pub struct DecodeBudget {
    sem: Arc<Semaphore>,
}

impl DecodeBudget {
    /// A budget of `bytes` (rounded up to KiB).
    pub fn new(bytes: usize) -> Self {
        DecodeBudget {
            sem: Arc::new(Semaphore::new(kib(bytes).min(Semaphore::MAX_PERMITS))),
        }
    }

    fn take(&self, kib: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        u32::try_from(kib)
            .ok()
            .and_then(|n| self.sem.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServerBusy",
                    "too many compressed request bodies are being decoded; retry later",
                );
                e.retry_after = Some(1);
                e
            })
    }
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// A decoded body; holds its share of the [`DecodeBudget`] until dropped.
pub struct Decoded {
    bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Decoded {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The `Content-Encoding` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// None.
    Identity,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Reads `Content-Encoding` (identity, gzip, zstd).
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match enc.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("Content-Encoding {other:?} is not supported: use gzip, zstd or none"),
        )),
    }
}

/// Decodes a body, at most `limit` bytes decoded. Blocking (CPU-bound): call it on the blocking
/// pool. Reads in chunks and takes budget permits before its buffer grows, so that neither one
/// request nor all of them together hold more than their caps.
pub fn decode(
    enc: Encoding,
    raw: Bytes,
    limit: usize,
    budget: &DecodeBudget,
) -> Result<Decoded, ApiError> {
    let name = match enc {
        Encoding::Identity => {
            return Ok(Decoded {
                bytes: raw,
                _permit: None,
            });
        }
        Encoding::Gzip => "gzip",
        Encoding::Zstd => "zstd",
    };
    let bad = || ApiError::bad_request(format!("the {name} body could not be decoded"));
    let mut reader: Box<dyn Read + '_> = match enc {
        Encoding::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(&raw[..]).map_err(|_| bad())?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|_| bad())?;
            Box::new(d)
        }
        _ => Box::new(flate2::read::GzDecoder::new(&raw[..])),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut held = 0usize;
    let mut chunk = vec![0u8; DECODE_CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "the {name} body could not be decoded (a zstd frame may use a window of at most {} MiB)",
                    (1usize << ZSTD_WINDOW_LOG_MAX) >> 20
                )));
            }
        };
        let len = out.len() + n;
        if len > limit {
            return Err(too_large(limit));
        }
        if len > out.capacity() {
            let cap = out
                .capacity()
                .saturating_mul(2)
                .max(len)
                .max(DECODE_CHUNK)
                .min(limit);
            let need = kib(cap);
            if need > held {
                let p = budget.take(need - held)?;
                match &mut permit {
                    Some(h) => h.merge(p),
                    None => permit = Some(p),
                }
                held = need;
            }
            out.reserve_exact(cap - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Decoded {
        bytes: Bytes::from(out),
        _permit: permit,
    })
}

/// Decodes and parses a body on the blocking pool.
pub async fn decode_parse<T: DeserializeOwned + Send + 'static>(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<T, ApiError> {
    let enc = encoding(headers)?;
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let bytes = decode(enc, raw, st.max_body, &st.decode_budget)?;
        parse(&bytes)
    })
    .await
    .map_err(|_| ApiError::internal("decoding the request body failed"))?
}

/// Whether a JSON text starts as an object (its first non-whitespace byte is `{`).
pub fn is_json_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// Parses strict JSON into `T`, naming the offending field on error. The body must be a JSON
/// object (serde would also accept a struct's fields as an array).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json_object(bytes) {
        return Err(ApiError::bad_request(
            "invalid JSON body: the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Reads, checks and parses a JSON body (decoding and parsing run on the blocking pool).
pub async fn json<T: DeserializeOwned + Send + 'static>(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    require_json_type(headers)?;
    encoding(headers)?;
    let raw = read_raw(headers, body, st.max_body).await?;
    decode_parse(st, headers, raw).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_of(n: usize) -> Bytes {
        Bytes::from(zstd::encode_all(&vec![b' '; n][..], 3).unwrap())
    }

    #[test]
    fn decoded_bytes_in_flight_are_bounded_and_returned() {
        let limit = 256 * 1024;
        let budget = DecodeBudget::new(2 * limit);
        let a = decode(Encoding::Zstd, zstd_of(limit), limit, &budget).unwrap();
        let b = decode(Encoding::Zstd, zstd_of(limit), limit, &budget).unwrap();
        assert_eq!((a.len(), b.len()), (limit, limit));
        // The budget is spent: a third decode is refused with 503, not buffered.
        let e = decode(Encoding::Zstd, zstd_of(1000), limit, &budget)
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(1));
        drop((a, b));
        // A bomb stops at the limit and gives its permits back.
        let e = decode(Encoding::Zstd, zstd_of(100 * limit), limit, &budget)
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&vec![b' '; 100 * limit]).unwrap();
            Bytes::from(e.finish().unwrap())
        };
        let e = decode(Encoding::Gzip, gz, limit, &budget).err().unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.sem.available_permits(), kib(2 * limit));
        // Identity bodies are passed through without a copy or a permit.
        let raw = Bytes::from_static(b"{}");
        let d = decode(Encoding::Identity, raw, limit, &budget).unwrap();
        assert_eq!(&d[..], b"{}");
    }
}

//! Request bodies: size limit, content type, content encoding, strict JSON.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use std::io::Read;

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

/// Decodes `Content-Encoding` (identity, gzip, zstd), at most `limit` bytes decoded.
pub fn decode(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Vec<u8>, ApiError> {
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match enc.as_str() {
        "" | "identity" => return Ok(raw.to_vec()),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|_| ApiError::bad_request("the zstd body could not be decoded"))?,
        ),
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("Content-Encoding {other:?} is not supported: use gzip, zstd or none"),
            ));
        }
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::bad_request(format!("the {enc} body could not be decoded")))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

/// Parses strict JSON into `T`, naming the offending field on error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Reads, checks and parses a JSON body.
pub async fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    require_json_type(headers)?;
    let raw = read_raw(headers, body, limit).await?;
    let bytes = decode(headers, raw, limit)?;
    parse(&bytes)
}

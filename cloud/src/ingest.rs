//! Upload channels: record schemas, validation, canonical bodies and content hashes.

use crate::error::ApiError;
use crate::store::{FLAG_EA_ELIGIBLE, FLAG_HAS_TELEMETRY, PreparedRecord};
use cloudattach_sdk::version::client;
use cloudattach_sdk::{Analytics, DefenderState, Device};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;

/// An upload channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Device records (tenant-attach).
    Devices,
    /// Endpoint analytics telemetry (endpoint-analytics).
    Analytics,
    /// Defender state and detections (defender-reporting).
    Defender,
    /// Co-management enrollment state (co-management).
    Comanagement,
    /// An extension feature's records.
    Ext(String),
}

/// Built-in feature ids, in the order status lists them.
pub const BUILTIN_FEATURES: [&str; 5] = [
    "tenant-attach",
    "endpoint-analytics",
    "rbac-authority",
    "defender-reporting",
    "co-management",
];

/// Whether `id` is a valid feature id (`^[a-z][a-z0-9-]{1,63}$`).
pub fn valid_feature_id(id: &str) -> bool {
    let b = id.as_bytes();
    (2..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl Channel {
    /// Parses a built-in channel name.
    pub fn builtin(s: &str) -> Option<Channel> {
        Some(match s {
            "devices" => Channel::Devices,
            "analytics" => Channel::Analytics,
            "defender" => Channel::Defender,
            "comanagement" => Channel::Comanagement,
            _ => return None,
        })
    }

    /// The storage name of the channel.
    pub fn storage_name(&self) -> String {
        match self {
            Channel::Devices => "devices".into(),
            Channel::Analytics => "analytics".into(),
            Channel::Defender => "defender".into(),
            Channel::Comanagement => "comanagement".into(),
            Channel::Ext(id) => ext_channel(id),
        }
    }

    /// The feature that must be enabled to upload to the channel.
    pub fn feature_id(&self) -> &str {
        match self {
            Channel::Devices => "tenant-attach",
            Channel::Analytics => "endpoint-analytics",
            Channel::Defender => "defender-reporting",
            Channel::Comanagement => "co-management",
            Channel::Ext(id) => id,
        }
    }
}

/// The storage channel of an extension feature.
pub fn ext_channel(feature_id: &str) -> String {
    format!("ext:{feature_id}")
}

/// The storage channels whose records belong to a feature.
pub fn feature_channels(feature_id: &str) -> Vec<String> {
    match feature_id {
        "tenant-attach" => vec!["devices".into()],
        "endpoint-analytics" => vec!["analytics".into()],
        "defender-reporting" => vec!["defender".into()],
        "co-management" => vec!["comanagement".into()],
        "rbac-authority" => vec![],
        other => vec![ext_channel(other)],
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    upserts: Vec<RawUpsert<'a>>,
    #[serde(default)]
    deletes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpsert<'a> {
    key: String,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// An Endpoint analytics record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsRecord {
    /// Device resource id.
    pub resource_id: i64,
    /// Client version of the device.
    #[serde(default)]
    pub client_version: Option<String>,
    /// Telemetry; `null` for an enrolled device that has not reported yet.
    #[serde(default)]
    pub analytics: Option<Analytics>,
}

/// A Defender record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenderRecord {
    /// Device resource id.
    pub resource_id: i64,
    /// Defender state.
    pub defender: DefenderState,
}

/// Co-management state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComanagementState {
    /// Eligible, not scheduled.
    #[serde(rename = "eligible")]
    Eligible,
    /// Scheduled for automatic enrollment.
    #[serde(rename = "scheduledForEnrollment")]
    ScheduledForEnrollment,
    /// Co-managed (enrolled).
    #[serde(rename = "comanaged")]
    Comanaged,
}

impl ComanagementState {
    /// The stored tag.
    pub fn as_str(self) -> &'static str {
        match self {
            ComanagementState::Eligible => "eligible",
            ComanagementState::ScheduledForEnrollment => "scheduledForEnrollment",
            ComanagementState::Comanaged => "comanaged",
        }
    }
}

/// A co-management record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComanagementRecord {
    /// Device resource id.
    pub resource_id: i64,
    /// State.
    pub state: ComanagementState,
    /// Device name (optional; taken from the device record when uploaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn parse_record<T: DeserializeOwned>(key: &str, raw: &RawValue) -> Result<T, ApiError> {
    serde_json::from_str(raw.get()).map_err(|e| ApiError::bad_request(format!("record {key}: {e}")))
}

fn check_key(key: &str, resource_id: Option<i64>) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 256 {
        return Err(ApiError::bad_request(
            "record keys must be 1 to 256 characters",
        ));
    }
    // The key must be the canonical decimal form: "01", "+1" or " 1" would name the same device
    // under a second key.
    if let Some(id) = resource_id
        && id <= 0
    {
        return Err(ApiError::bad_request(format!(
            "record {key}: resource_id {id} is not positive"
        )));
    }
    if let Some(id) = resource_id
        && key != id.to_string()
    {
        return Err(ApiError::bad_request(format!(
            "key {key:?} does not match the record's resource_id {id}: keys of built-in channels are the resource_id in decimal"
        )));
    }
    Ok(())
}

fn prepared(key: String, body: Vec<u8>, tag: Option<String>, flags: i64) -> PreparedRecord {
    let hash = xxhash_rust::xxh3::xxh3_64(&body) as i64;
    PreparedRecord {
        key,
        hash,
        tag,
        flags,
        body,
    }
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Whether a device is eligible for Endpoint analytics (SPEC §2).
pub fn ea_eligible(d: &Device) -> bool {
    d.client
        && !d.is_server()
        && d.is_windows_client_os()
        && d.client_at_least(client::ENDPOINT_ANALYTICS)
}

/// Longest string (in characters) inside a record of a built-in channel: device names, OS
/// strings, versions, …
pub const MAX_STRING_CHARS: usize = 1024;

/// The length in characters of the longest JSON string (value or member name) in `json`, which
/// must be valid JSON; an escape sequence counts as one character.
fn longest_string(json: &str) -> usize {
    let mut longest = 0;
    let mut chars = json.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut n = 0;
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    if chars.next() == Some('u') {
                        for _ in 0..4 {
                            chars.next();
                        }
                    }
                    n += 1;
                }
                _ => n += 1,
            }
        }
        longest = longest.max(n);
    }
    longest
}

fn prepare_one(channel: &Channel, u: &RawUpsert<'_>) -> Result<PreparedRecord, ApiError> {
    let key = u.key.clone();
    if !matches!(channel, Channel::Ext(_)) && longest_string(u.record.get()) > MAX_STRING_CHARS {
        return Err(ApiError::bad_request(format!(
            "record {key}: strings (such as the device name) are at most {MAX_STRING_CHARS} characters"
        )));
    }
    match channel {
        Channel::Devices => {
            let d: Device = parse_record(&key, u.record)?;
            check_key(&key, Some(d.resource_id))?;
            if d.defender.is_some() || d.analytics.is_some() {
                return Err(ApiError::bad_request(format!(
                    "device {key}: the fields `defender` and `analytics` are not part of a device record; \
                     upload them to the defender and analytics channels"
                )));
            }
            if !d.client {
                return Err(ApiError::bad_request(format!(
                    "device {key}: only devices with a client (client = true) are uploaded"
                )));
            }
            if d.name.trim().is_empty() {
                return Err(ApiError::bad_request(format!(
                    "device {key}: name is empty"
                )));
            }
            // The rule the site reader applies too (positive id, text lengths, crash days).
            d.validate()
                .map_err(|e| ApiError::bad_request(format!("device {key}: {e}")))?;
            let flags = if ea_eligible(&d) { FLAG_EA_ELIGIBLE } else { 0 };
            let body = to_vec(&d);
            Ok(prepared(key, body, Some(d.name), flags))
        }
        Channel::Analytics => {
            let r: AnalyticsRecord = parse_record(&key, u.record)?;
            check_key(&key, Some(r.resource_id))?;
            if r.analytics
                .iter()
                .flat_map(|a| a.apps.iter())
                .any(|a| a.daily_crashes.len() > 14)
            {
                return Err(ApiError::bad_request(format!(
                    "analytics {key}: daily_crashes has at most 14 entries"
                )));
            }
            let flags = if r.analytics.is_some() {
                FLAG_HAS_TELEMETRY
            } else {
                0
            };
            Ok(prepared(key, to_vec(&r), None, flags))
        }
        Channel::Defender => {
            let r: DefenderRecord = parse_record(&key, u.record)?;
            check_key(&key, Some(r.resource_id))?;
            Ok(prepared(key, to_vec(&r), None, 0))
        }
        Channel::Comanagement => {
            let r: ComanagementRecord = parse_record(&key, u.record)?;
            check_key(&key, Some(r.resource_id))?;
            let tag = Some(r.state.as_str().to_string());
            Ok(prepared(key, to_vec(&r), tag, 0))
        }
        Channel::Ext(_) => {
            let r: serde_json::Value = parse_record(&key, u.record)?;
            check_key(&key, None)?;
            if !r.is_object() {
                return Err(ApiError::bad_request(format!(
                    "record {key}: must be a JSON object"
                )));
            }
            Ok(prepared(key, to_vec(&r), None, 0))
        }
    }
}

/// Batches at least this large are prepared on several threads.
const PARALLEL_MIN: usize = 2_000;

/// Parses and validates an upload batch of `channel`; returns the prepared upserts and the
/// deleted keys. Nothing is stored. Large batches are validated on up to 4 threads.
pub fn prepare_batch(
    channel: &Channel,
    bytes: &[u8],
) -> Result<(Vec<PreparedRecord>, Vec<String>), ApiError> {
    // serde would also accept the envelope's fields as a JSON array (`[]`, `[[…], […]]`).
    if !crate::body::is_json_object(bytes) {
        return Err(ApiError::bad_request(
            "invalid upload batch: the body must be a JSON object {\"upserts\": […], \"deletes\": […]}",
        ));
    }
    let env: RawEnvelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid upload batch: {e}")))?;
    let n = env.upserts.len();
    let threads = if n >= PARALLEL_MIN {
        std::thread::available_parallelism()
            .map(|x| x.get())
            .unwrap_or(1)
            .min(4)
    } else {
        1
    };
    let ups: Vec<PreparedRecord> = if threads > 1 {
        let chunk = n.div_ceil(threads);
        let parts: Vec<Result<Vec<PreparedRecord>, ApiError>> = std::thread::scope(|s| {
            let handles: Vec<_> = env
                .upserts
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().map(|u| prepare_one(channel, u)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(ApiError::internal("record validation failed")))
                })
                .collect()
        });
        let mut v = Vec::with_capacity(n);
        for p in parts {
            v.extend(p?);
        }
        v
    } else {
        env.upserts
            .iter()
            .map(|u| prepare_one(channel, u))
            .collect::<Result<_, _>>()?
    };
    let deletes = env.deletes;
    let mut seen = HashSet::with_capacity(ups.len() + deletes.len());
    for k in ups.iter().map(|r| &r.key).chain(deletes.iter()) {
        if !seen.insert(k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "key {k:?} appears more than once in the batch"
            )));
        }
    }
    for k in &deletes {
        check_key(k, None)?;
    }
    Ok((ups, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_string_counts_characters_and_escapes() {
        assert_eq!(longest_string(r#"{"a":"xyz","bb":1}"#), 3);
        assert_eq!(longest_string(r#"{"a":"\u00e9\"\\é"}"#), 4);
        assert_eq!(longest_string("[]"), 0);
    }

    #[test]
    fn feature_ids() {
        assert!(valid_feature_id("tenant-attach"));
        assert!(valid_feature_id("acme-inventory2"));
        assert!(!valid_feature_id("A-b"));
        assert!(!valid_feature_id("x"));
        assert!(!valid_feature_id("9abc"));
    }

    #[test]
    fn same_content_same_hash_and_unknown_field_named() {
        let b = br#"{"upserts":[{"key":"1","record":{"resource_id":1,"name":"PC","client":true,"client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045","join_type":"hybrid","mdm_enrolled":false,"client_version":"5.00.9106.1000"}}]}"#;
        let (a, _) = prepare_batch(&Channel::Devices, b).unwrap();
        let (c, _) = prepare_batch(&Channel::Devices, b).unwrap();
        assert_eq!(a[0].hash, c[0].hash);
        assert_eq!(a[0].flags, FLAG_EA_ELIGIBLE);
        let bad = br#"{"upserts":[{"key":"1","record":{"resource_id":1,"bogus":2}}]}"#;
        let e = prepare_batch(&Channel::Devices, bad).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }
}

//! Upload channels: record schemas, validation, canonical bodies and content hashes.
//!
//! The channels, the record schemas and every rule a record or key must meet are the model's
//! (`cloudattach_model::rules`), so that the test kit refuses what this cloud refuses; this
//! module turns a validated batch into storage rows.

use crate::error::ApiError;
use crate::store::{
    FLAG_DEFENDER_UNHEALTHY, FLAG_EA_ELIGIBLE, FLAG_HAS_TELEMETRY, PreparedRecord,
    eligibility_flags,
};
use cloudattach_model::comanagement::classify;
use cloudattach_model::rules::{ChannelRecord, RecordError, validate_batch_keys, validate_record};
use cloudattach_model::version::client;
use cloudattach_model::{DefenderState, Device};
use serde::Deserialize;
use serde::Serialize;
use serde_json::value::RawValue;

pub use cloudattach_model::rules::{AnalyticsRecord, Channel, ComanagementRecord, DefenderRecord};

/// Built-in feature ids, in the order status lists them.
pub const BUILTIN_FEATURES: [&str; 5] = [
    "tenant-attach",
    "endpoint-analytics",
    "rbac-authority",
    "defender-reporting",
    "co-management",
];

/// Where a channel's records are stored.
pub trait ChannelStorage {
    /// The storage name of the channel.
    fn storage_name(&self) -> String;
}

impl ChannelStorage for Channel {
    fn storage_name(&self) -> String {
        match self {
            Channel::Ext(id) => ext_channel(id),
            builtin => builtin.name(),
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

// The model's `UploadBody<&RawValue>` has this shape; this private copy keeps the wording of
// serde's messages for a malformed batch (they name the struct) as the API documents them.
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

fn bad(e: RecordError) -> ApiError {
    ApiError::bad_request(e.message())
}

fn prepared(
    key: String,
    sent: &RawValue,
    body: Vec<u8>,
    tag: Option<String>,
    flags: i64,
) -> PreparedRecord {
    let hash = xxhash_rust::xxh3::xxh3_64(&body) as i64;
    // The bytes exactly as the uploader sent them (the span of `record` in the batch), not the
    // canonical body: the uploader's ledger holds the hash of what it sent.
    let sent_hash = xxhash_rust::xxh3::xxh3_64(sent.get().as_bytes()) as i64;
    PreparedRecord {
        key,
        hash,
        sent_hash,
        tag,
        flags,
        body,
    }
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Whether a device is eligible for Endpoint analytics: a Windows 10 or 11 workstation with a
/// client of 5.00.8968 or later.
pub fn ea_eligible(d: &Device) -> bool {
    d.client
        && !d.is_server()
        && d.is_windows_client_os()
        && d.client_at_least(client::ENDPOINT_ANALYTICS)
}

/// The indexed flags of a device record: [`FLAG_EA_ELIGIBLE`] and its co-management eligibility
/// class ([`eligibility_flags`]).
pub fn device_flags(d: &Device) -> i64 {
    let ea = if ea_eligible(d) { FLAG_EA_ELIGIBLE } else { 0 };
    ea | eligibility_flags(classify(d))
}

/// The health issues of a device's Defender state, named as in the Defender reports
/// (`unhealthy-endpoints`); none means healthy.
pub fn defender_issues(d: &DefenderState) -> Vec<&'static str> {
    let checks = [
        (!d.defender_enabled, "defenderDisabled"),
        (!d.rtp_enabled, "realTimeProtectionDisabled"),
        (d.signature_out_of_date, "signatureOutOfDate"),
        (d.quick_scan_overdue, "quickScanOverdue"),
        (d.full_scan_overdue, "fullScanOverdue"),
        (d.reboot_required, "rebootRequired"),
        (d.full_scan_required, "fullScanRequired"),
        (d.computer_state & 16 != 0, "criticalFailure"),
        (d.computer_state & 4 != 0, "manualStepsRequired"),
        (d.computer_state & 8 != 0, "offlineScanRequired"),
        (d.product_status != 0, "productStatusIssues"),
        (!d.tamper_protection_enabled, "tamperProtectionDisabled"),
    ];
    checks
        .into_iter()
        .filter_map(|(cond, name)| cond.then_some(name))
        .collect()
}

/// The indexed flags of a Defender record: [`FLAG_DEFENDER_UNHEALTHY`] when it has an issue.
pub fn defender_flags(d: &DefenderState) -> i64 {
    if defender_issues(d).is_empty() {
        0
    } else {
        FLAG_DEFENDER_UNHEALTHY
    }
}

fn prepare_one(channel: &Channel, u: &RawUpsert<'_>) -> Result<PreparedRecord, ApiError> {
    let key = u.key.clone();
    let sent = u.record;
    Ok(
        match validate_record(channel, &key, u.record.get()).map_err(bad)? {
            ChannelRecord::Device(d) => {
                let flags = device_flags(&d);
                let body = to_vec(&d);
                prepared(key, sent, body, Some(d.name), flags)
            }
            ChannelRecord::Analytics(r) => {
                let flags = if r.analytics.is_some() {
                    FLAG_HAS_TELEMETRY
                } else {
                    0
                };
                prepared(key, sent, to_vec(&r), None, flags)
            }
            ChannelRecord::Defender(r) => {
                let flags = defender_flags(&r.defender);
                prepared(key, sent, to_vec(&r), None, flags)
            }
            ChannelRecord::Comanagement(r) => {
                let tag = Some(r.state.as_str().to_string());
                prepared(key, sent, to_vec(&r), tag, 0)
            }
            ChannelRecord::Ext(r) => prepared(key, sent, to_vec(&r), None, 0),
            // The model checks the channels this cloud serves, and no other.
            _ => return Err(ApiError::internal("record validation failed")),
        },
    )
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
    validate_batch_keys(ups.iter().map(|r| r.key.as_str()), &deletes).map_err(bad)?;
    Ok((ups, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_string_counts_characters_and_escapes() {
        use cloudattach_model::rules::longest_string;
        assert_eq!(longest_string(r#"{"a":"xyz","bb":1}"#), 3);
        assert_eq!(longest_string(r#"{"a":"\u00e9\"\\é"}"#), 4);
        assert_eq!(longest_string("[]"), 0);
    }

    #[test]
    fn feature_ids() {
        assert!(cloudattach_model::is_valid_feature_id("tenant-attach"));
        assert!(cloudattach_model::is_valid_feature_id("acme-inventory2"));
        assert!(!cloudattach_model::is_valid_feature_id("A-b"));
        assert!(!cloudattach_model::is_valid_feature_id("x"));
        assert!(!cloudattach_model::is_valid_feature_id("9abc"));
        assert!(
            !cloudattach_model::is_valid_feature_id("acme-"),
            "the registry's rule: no trailing '-'"
        );
    }

    #[test]
    fn a_body_built_from_the_model_is_a_batch() {
        use cloudattach_model::gateway::{UploadBody, Upsert};
        let body = UploadBody::new(
            vec![Upsert::new("a", serde_json::json!({"x": 1}))],
            vec!["b".to_string()],
        );
        let bytes = serde_json::to_vec(&body).unwrap();
        let (ups, dels) = prepare_batch(&Channel::Ext("acme-inventory".into()), &bytes).unwrap();
        assert_eq!((ups[0].key.as_str(), dels), ("a", vec!["b".to_string()]));
    }

    /// The sent hash is of the record's bytes exactly as the batch carried them: the same
    /// content in other bytes has the same content hash and another sent hash.
    #[test]
    fn the_sent_hash_is_of_the_bytes_received_not_the_canonical_body() {
        let record = r#"{"key":"x","n":1}"#;
        let spaced = r#"{ "n" : 1, "key":"x" }"#;
        let batch = |r: &str| format!(r#"{{"upserts":[{{"key":"a","record":{r}}}]}}"#);
        let ch = Channel::Ext("acme-inventory".into());
        let (a, _) = prepare_batch(&ch, batch(record).as_bytes()).unwrap();
        let (b, _) = prepare_batch(&ch, batch(spaced).as_bytes()).unwrap();
        assert_eq!(a[0].hash, b[0].hash, "same content");
        assert_eq!(
            a[0].sent_hash,
            xxhash_rust::xxh3::xxh3_64(record.as_bytes()) as i64
        );
        assert_eq!(
            b[0].sent_hash,
            xxhash_rust::xxh3::xxh3_64(spaced.as_bytes()) as i64
        );
    }

    #[test]
    fn same_content_same_hash_and_unknown_field_named() {
        let b = br#"{"upserts":[{"key":"1","record":{"resource_id":1,"name":"PC","client":true,"client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045","join_type":"hybrid","mdm_enrolled":false,"client_version":"5.00.9106.1000"}}]}"#;
        let (a, _) = prepare_batch(&Channel::Devices, b).unwrap();
        let (c, _) = prepare_batch(&Channel::Devices, b).unwrap();
        assert_eq!(a[0].hash, c[0].hash);
        assert_eq!(
            a[0].flags,
            FLAG_EA_ELIGIBLE
                | eligibility_flags(cloudattach_model::comanagement::EligibilityClass::Eligible)
        );
        let bad = br#"{"upserts":[{"key":"1","record":{"resource_id":1,"bogus":2}}]}"#;
        let e = prepare_batch(&Channel::Devices, bad).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }
}

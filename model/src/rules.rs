//! The upload channels and the rules the cloud applies to every record and key it is sent: one
//! rule, in one place. The cloud's gateway refuses a batch that breaks one of them (`400`, and
//! nothing of the batch is stored) with the message [`validate_record`] and
//! [`validate_batch_keys`] give; the test kit applies the same functions, so a plugin test fails
//! where the real cloud would refuse the upload.
//!
//! | rule | constant | function |
//! |---|---|---|
//! | a key is 1 to 256 bytes (characters, for the ASCII keys plugins use) | [`MIN_RECORD_KEY_LEN`], [`MAX_RECORD_KEY_LEN`] | [`validate_record_key`] |
//! | a key of a built-in channel is the record's `resource_id` in canonical decimal, and the id is positive | — | [`validate_device_key`] |
//! | every string of a built-in channel's record is at most 1,024 characters | [`MAX_RECORD_STRING_CHARS`] | [`validate_record`] |
//! | a record has its channel's schema (unknown fields refused) | — | [`validate_record`] |
//! | a device record has a client, a name, no `defender` or `analytics` block, and passes [`Device::validate`] | [`MAX_TEXT_LEN`](crate::device::MAX_TEXT_LEN), [`MAX_CRASH_DAYS`] | [`validate_record`] |
//! | an app's `daily_crashes` in an analytics record has at most 14 entries | [`MAX_CRASH_DAYS`] | [`validate_record`] |
//! | an extension channel's record is a JSON object | — | [`validate_record`] |
//! | a key appears at most once in a batch (upserts and deletes together) | — | [`validate_batch_keys`] |
//!
//! Two rules depend on what the cloud holds, not on the record, and only the cloud applies
//! them: the channel's feature must be enabled (`409 FeatureNotEnabled`), and `analytics` and
//! `defender` records need their device uploaded to `devices` (`400` listing the missing keys).

use crate::device::{Analytics, DefenderState, Device, MAX_CRASH_DAYS};
use crate::ids::is_valid_feature_id;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// The shortest record key, in bytes.
pub const MIN_RECORD_KEY_LEN: usize = 1;

/// The longest record key, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 256;

/// The longest string (value or member name), in characters, inside a record of a built-in
/// channel: device names, OS captions, versions, …
pub const MAX_RECORD_STRING_CHARS: usize = 1024;

/// An upload channel of the cloud's gateway (`POST …/upload/{channel}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Device records (tenant-attach).
    Devices,
    /// Endpoint analytics telemetry (endpoint-analytics).
    Analytics,
    /// Defender state and detections (defender-reporting).
    Defender,
    /// Co-management enrollment state (co-management).
    Comanagement,
    /// An extension feature's records (`ext/<feature id>`).
    Ext(String),
}

impl Channel {
    /// A built-in channel by name (`devices`, `analytics`, `defender`, `comanagement`).
    pub fn builtin(name: &str) -> Option<Channel> {
        Some(match name {
            "devices" => Channel::Devices,
            "analytics" => Channel::Analytics,
            "defender" => Channel::Defender,
            "comanagement" => Channel::Comanagement,
            _ => return None,
        })
    }

    /// A channel by the name a plugin opens an upload to (`Host::open_sync` in the SDK): a
    /// built-in name or `ext/<feature id>` with a valid feature id.
    ///
    /// ```
    /// use cloudattach_model::rules::Channel;
    /// assert_eq!(Channel::parse("devices"), Some(Channel::Devices));
    /// assert_eq!(Channel::parse("ext/collection-summary"), Some(Channel::Ext("collection-summary".into())));
    /// assert_eq!(Channel::parse("ext/Bad"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Channel> {
        match name.strip_prefix("ext/") {
            Some(id) if is_valid_feature_id(id) => Some(Channel::Ext(id.to_string())),
            Some(_) => None,
            None => Channel::builtin(name),
        }
    }

    /// The channel's name: `devices`, …, or `ext/<feature id>`.
    pub fn name(&self) -> String {
        match self {
            Channel::Devices => "devices".into(),
            Channel::Analytics => "analytics".into(),
            Channel::Defender => "defender".into(),
            Channel::Comanagement => "comanagement".into(),
            Channel::Ext(id) => format!("ext/{id}"),
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

    /// Whether the channel is one of the four built-in ones (keyed by resource id, with
    /// schemas).
    pub fn is_builtin(&self) -> bool {
        !matches!(self, Channel::Ext(_))
    }

    /// The top-level fields of the channel's records whose values the site's device timeline
    /// keeps with each change (not inventory data: a state the timeline shows as it was);
    /// of every other field it keeps a hash only.
    ///
    /// ```
    /// use cloudattach_model::rules::Channel;
    /// assert_eq!(Channel::Comanagement.timeline_kept_fields(), ["state"]);
    /// assert!(Channel::Devices.timeline_kept_fields().is_empty());
    /// ```
    pub fn timeline_kept_fields(&self) -> &'static [&'static str] {
        match self {
            Channel::Comanagement => &["state"],
            _ => &[],
        }
    }
}

/// A record or key the cloud refuses, with the message of its `400` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    message: String,
}

impl RecordError {
    fn new(message: impl Into<String>) -> Self {
        RecordError {
            message: message.into(),
        }
    }

    /// What is wrong, as the cloud words it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RecordError {}

/// A record of the `analytics` channel.
///
/// `#[non_exhaustive]`: build it with [`AnalyticsRecord::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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

impl AnalyticsRecord {
    /// The record of one device.
    pub fn new(
        resource_id: i64,
        client_version: Option<String>,
        analytics: Option<Analytics>,
    ) -> Self {
        AnalyticsRecord {
            resource_id,
            client_version,
            analytics,
        }
    }
}

/// A record of the `defender` channel.
///
/// `#[non_exhaustive]`: build it with [`DefenderRecord::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DefenderRecord {
    /// Device resource id.
    pub resource_id: i64,
    /// Defender state.
    pub defender: DefenderState,
}

impl DefenderRecord {
    /// The record of one device.
    pub fn new(resource_id: i64, defender: DefenderState) -> Self {
        DefenderRecord {
            resource_id,
            defender,
        }
    }
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
    /// The identifier used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ComanagementState::Eligible => "eligible",
            ComanagementState::ScheduledForEnrollment => "scheduledForEnrollment",
            ComanagementState::Comanaged => "comanaged",
        }
    }
}

/// A record of the `comanagement` channel.
///
/// `#[non_exhaustive]`: build it with [`ComanagementRecord::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ComanagementRecord {
    /// Device resource id.
    pub resource_id: i64,
    /// State.
    pub state: ComanagementState,
    /// Device name (optional; taken from the device record when uploaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ComanagementRecord {
    /// The record of one device.
    pub fn new(resource_id: i64, state: ComanagementState, name: Option<String>) -> Self {
        ComanagementRecord {
            resource_id,
            state,
            name,
        }
    }
}

/// A record that passed [`validate_record`], read with its channel's schema.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChannelRecord {
    /// A `devices` record.
    Device(Box<Device>),
    /// An `analytics` record.
    Analytics(AnalyticsRecord),
    /// A `defender` record.
    Defender(DefenderRecord),
    /// A `comanagement` record.
    Comanagement(ComanagementRecord),
    /// An extension channel's record: a JSON object.
    Ext(serde_json::Value),
}

/// The key rule of every channel: 1 to 256 bytes.
///
/// ```
/// use cloudattach_model::rules::validate_record_key;
/// assert!(validate_record_key("PS100012").is_ok());
/// assert_eq!(validate_record_key("").unwrap_err().message(), "record keys must be 1 to 256 characters");
/// ```
pub fn validate_record_key(key: &str) -> Result<(), RecordError> {
    if key.len() < MIN_RECORD_KEY_LEN || key.len() > MAX_RECORD_KEY_LEN {
        return Err(RecordError::new(format!(
            "record keys must be {MIN_RECORD_KEY_LEN} to {MAX_RECORD_KEY_LEN} characters"
        )));
    }
    Ok(())
}

/// The key rule of the built-in channels: [`validate_record_key`], a positive `resource_id`,
/// and the key is that id in canonical decimal (exactly `resource_id.to_string()`: `"01"`,
/// `"+1"` or `" 1"` would name the same device under a second key).
///
/// ```
/// use cloudattach_model::rules::validate_device_key;
/// assert!(validate_device_key("42", 42).is_ok());
/// assert!(validate_device_key("042", 42).is_err());
/// assert!(validate_device_key("0", 0).is_err());
/// ```
pub fn validate_device_key(key: &str, resource_id: i64) -> Result<(), RecordError> {
    validate_record_key(key)?;
    if resource_id <= 0 {
        return Err(RecordError::new(format!(
            "record {key}: resource_id {resource_id} is not positive"
        )));
    }
    if key != resource_id.to_string() {
        return Err(RecordError::new(format!(
            "key {key:?} does not match the record's resource_id {resource_id}: keys of built-in channels are the resource_id in decimal"
        )));
    }
    Ok(())
}

/// The length in characters of the longest JSON string (value or member name) in `json`, which
/// must be valid JSON; an escape sequence counts as one character.
///
/// ```
/// use cloudattach_model::rules::longest_string;
/// assert_eq!(longest_string(r#"{"a":"xyz","bb":1}"#), 3);
/// assert_eq!(longest_string(r#"{"a":"\u00e9\"\\é"}"#), 4);
/// ```
pub fn longest_string(json: &str) -> usize {
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

fn parse<T: DeserializeOwned>(key: &str, json: &str) -> Result<T, RecordError> {
    serde_json::from_str(json).map_err(|e| RecordError::new(format!("record {key}: {e}")))
}

/// Every rule one record of `channel` must meet, in the order the cloud checks them; `json` is
/// the record as sent. Returns the record read with its channel's schema.
///
/// ```
/// use cloudattach_model::rules::{Channel, validate_record};
/// let ext = Channel::Ext("collection-summary".into());
/// assert!(validate_record(&ext, "SMS00001", r#"{"devices": 4}"#).is_ok());
/// assert_eq!(
///     validate_record(&ext, "SMS00001", "[4]").unwrap_err().message(),
///     "record SMS00001: must be a JSON object"
/// );
/// let device = r#"{"resource_id":1,"name":"PC-1","client":false,"client_active":false,
///   "os":"","os_build":"","join_type":"workgroup","mdm_enrolled":false}"#;
/// assert_eq!(
///     validate_record(&Channel::Devices, "1", device).unwrap_err().message(),
///     "device 1: only devices with a client (client = true) are uploaded"
/// );
/// ```
pub fn validate_record(
    channel: &Channel,
    key: &str,
    json: &str,
) -> Result<ChannelRecord, RecordError> {
    if channel.is_builtin() && longest_string(json) > MAX_RECORD_STRING_CHARS {
        return Err(RecordError::new(format!(
            "record {key}: strings (such as the device name) are at most {MAX_RECORD_STRING_CHARS} characters"
        )));
    }
    match channel {
        Channel::Devices => {
            let d: Device = parse(key, json)?;
            validate_device_key(key, d.resource_id)?;
            if d.defender.is_some() || d.analytics.is_some() {
                return Err(RecordError::new(format!(
                    "device {key}: the fields `defender` and `analytics` are not part of a device record; \
                     upload them to the defender and analytics channels"
                )));
            }
            if !d.client {
                return Err(RecordError::new(format!(
                    "device {key}: only devices with a client (client = true) are uploaded"
                )));
            }
            if d.name.trim().is_empty() {
                return Err(RecordError::new(format!("device {key}: name is empty")));
            }
            // The rule the site reader applies too (positive id, text lengths, crash days).
            d.validate()
                .map_err(|e| RecordError::new(format!("device {key}: {e}")))?;
            Ok(ChannelRecord::Device(Box::new(d)))
        }
        Channel::Analytics => {
            let r: AnalyticsRecord = parse(key, json)?;
            validate_device_key(key, r.resource_id)?;
            if r.analytics
                .iter()
                .flat_map(|a| a.apps.iter())
                .any(|a| a.daily_crashes.len() > MAX_CRASH_DAYS)
            {
                return Err(RecordError::new(format!(
                    "analytics {key}: daily_crashes has at most {MAX_CRASH_DAYS} entries"
                )));
            }
            Ok(ChannelRecord::Analytics(r))
        }
        Channel::Defender => {
            let r: DefenderRecord = parse(key, json)?;
            validate_device_key(key, r.resource_id)?;
            Ok(ChannelRecord::Defender(r))
        }
        Channel::Comanagement => {
            let r: ComanagementRecord = parse(key, json)?;
            validate_device_key(key, r.resource_id)?;
            Ok(ChannelRecord::Comanagement(r))
        }
        Channel::Ext(_) => {
            let r: serde_json::Value = parse(key, json)?;
            validate_record_key(key)?;
            if !r.is_object() {
                return Err(RecordError::new(format!(
                    "record {key}: must be a JSON object"
                )));
            }
            Ok(ChannelRecord::Ext(r))
        }
    }
}

/// The rules of a batch's keys, once its records passed [`validate_record`]: a key appears at
/// most once among the upserts and deletes together, and a deleted key meets
/// [`validate_record_key`].
///
/// ```
/// use cloudattach_model::rules::validate_batch_keys;
/// assert!(validate_batch_keys(["1", "2"], &["3".to_string()]).is_ok());
/// assert_eq!(
///     validate_batch_keys(["1"], &["1".to_string()]).unwrap_err().message(),
///     "key \"1\" appears more than once in the batch"
/// );
/// ```
pub fn validate_batch_keys<'a>(
    upserts: impl IntoIterator<Item = &'a str>,
    deletes: &'a [String],
) -> Result<(), RecordError> {
    let mut seen = HashSet::with_capacity(deletes.len());
    for k in upserts
        .into_iter()
        .chain(deletes.iter().map(String::as_str))
    {
        if !seen.insert(k) {
            return Err(RecordError::new(format!(
                "key {k:?} appears more than once in the batch"
            )));
        }
    }
    for k in deletes {
        validate_record_key(k)?;
    }
    Ok(())
}

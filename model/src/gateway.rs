//! The documents of the cloud's attach gateway (`/api/v1/hierarchies/{hierarchy id}/…`) as
//! typed serde structs, shared by the cloud that answers them, the SDK helpers that read them
//! and the test kit's in-memory cloud: one shape, written down once.
//!
//! The structs are `#[non_exhaustive]` (the gateway may add keys in a minor version): read them
//! with serde, build them with their constructors.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// An HTTP method of a gateway call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
}

/// The body of `PUT features/{feature id}`: `{"settings": …}` (the whole body may be omitted).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FeatureBody {
    /// The feature's settings; `{}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
}

impl FeatureBody {
    /// A body carrying `settings`.
    pub fn new(settings: Value) -> Self {
        FeatureBody {
            settings: Some(settings),
        }
    }
}

/// One enabled feature, as `PUT` and `GET features/{feature id}` answer it and as each entry
/// of [`FeatureList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeatureInfo {
    /// The feature id.
    pub id: String,
    /// Always `true`: the gateway lists enabled features only (absent reads as `true`).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The settings the cloud holds (validated and normalized for built-in features).
    #[serde(default)]
    pub settings: Value,
    /// When it was first enabled (RFC 3339).
    #[serde(default)]
    pub enabled_at: Option<String>,
    /// When its settings last changed (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// When its records were last uploaded (RFC 3339), if ever.
    #[serde(default)]
    pub last_sync: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

impl FeatureInfo {
    /// An enabled feature with its settings, without times.
    pub fn new(id: impl Into<String>, settings: Value) -> Self {
        FeatureInfo {
            id: id.into(),
            enabled: true,
            settings,
            enabled_at: None,
            updated_at: None,
            last_sync: None,
        }
    }

    /// Sets when it was enabled and last updated.
    pub fn with_times(
        mut self,
        enabled_at: impl Into<String>,
        updated_at: impl Into<String>,
    ) -> Self {
        self.enabled_at = Some(enabled_at.into());
        self.updated_at = Some(updated_at.into());
        self
    }

    /// Sets the time of its last upload.
    pub fn with_last_sync(mut self, last_sync: Option<String>) -> Self {
        self.last_sync = last_sync;
        self
    }
}

/// `GET features`: `{"value": [feature…]}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeatureList {
    /// The enabled features.
    #[serde(default)]
    pub value: Vec<FeatureInfo>,
}

impl FeatureList {
    /// The list.
    pub fn new(value: Vec<FeatureInfo>) -> Self {
        FeatureList { value }
    }
}

/// `GET status`: `{"hierarchy_id", "plugins": [plugin status…]}` — the built-in features always,
/// then the enabled extension features.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HierarchyStatus {
    /// The hierarchy.
    #[serde(default)]
    pub hierarchy_id: String,
    /// One entry per feature.
    #[serde(default)]
    pub plugins: Vec<PluginStatus>,
}

impl HierarchyStatus {
    /// The status of a hierarchy.
    pub fn new(hierarchy_id: impl Into<String>, plugins: Vec<PluginStatus>) -> Self {
        HierarchyStatus {
            hierarchy_id: hierarchy_id.into(),
            plugins,
        }
    }

    /// The entry of one feature.
    pub fn plugin(&self, id: &str) -> Option<&PluginStatus> {
        self.plugins.iter().find(|p| p.id == id)
    }

    /// The entry of one feature in a hierarchy status answer, read on its own: an entry of
    /// another feature that does not parse does not hide this one.
    pub fn entry_of(answer: &Value, id: &str) -> Option<PluginStatus> {
        answer
            .get("plugins")?
            .as_array()?
            .iter()
            .find(|p| p.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|p| serde_json::from_value(p.clone()).ok())
    }
}

/// One feature's entry in [`HierarchyStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PluginStatus {
    /// The feature id.
    #[serde(default)]
    pub id: String,
    /// Whether the feature is enabled.
    #[serde(default)]
    pub enabled: bool,
    /// Counts of what the cloud holds (e.g. `devices_uploaded`; `records` for an extension
    /// feature).
    #[serde(default)]
    pub counts: Map<String, Value>,
    /// The settings held: absent when the answer has no `settings` key, `Some(Value::Null)` for
    /// a built-in feature that is not enabled.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub settings: Option<Value>,
    /// When the feature's records were last uploaded (RFC 3339), if ever.
    #[serde(default)]
    pub last_sync: Option<String>,
    /// Other keys of the entry (rbac-authority's `effective_authority`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A key that is present is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl PluginStatus {
    /// An entry without counts, settings or extra keys.
    pub fn new(id: impl Into<String>, enabled: bool) -> Self {
        PluginStatus {
            id: id.into(),
            enabled,
            counts: Map::new(),
            settings: None,
            last_sync: None,
            extra: Map::new(),
        }
    }

    /// Adds a count.
    pub fn with_count(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.counts.insert(key.into(), value.into());
        self
    }

    /// Sets the settings held (`Value::Null` for a feature that is not enabled).
    pub fn with_settings(mut self, settings: Value) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Sets the time of the last upload.
    pub fn with_last_sync(mut self, last_sync: Option<String>) -> Self {
        self.last_sync = last_sync;
        self
    }

    /// Adds an extra key.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// The body of `POST upload/{channel}`: upserts and deletions, applied in one transaction.
/// `R` is the record's type: a [`Value`], or a borrowed raw value to read it without copying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UploadBody<R = Value> {
    /// Records to add or replace.
    #[serde(default = "Vec::new")]
    pub upserts: Vec<Upsert<R>>,
    /// Keys to remove.
    #[serde(default)]
    pub deletes: Vec<String>,
}

impl<R> UploadBody<R> {
    /// A batch.
    pub fn new(upserts: Vec<Upsert<R>>, deletes: Vec<String>) -> Self {
        UploadBody { upserts, deletes }
    }
}

/// One upsert of an [`UploadBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Upsert<R = Value> {
    /// The record's key.
    pub key: String,
    /// The record.
    pub record: R,
}

impl<R> Upsert<R> {
    /// An upsert.
    pub fn new(key: impl Into<String>, record: R) -> Self {
        Upsert {
            key: key.into(),
            record,
        }
    }
}

/// The answer to an upload: `{"upserted", "deleted", "unchanged"}`. A record identical to the
/// stored one and a delete of an absent key count as `unchanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UploadAnswer {
    /// Records inserted or changed.
    #[serde(default)]
    pub upserted: u64,
    /// Records removed.
    #[serde(default)]
    pub deleted: u64,
    /// Records identical to the stored ones, and deletes of absent keys.
    #[serde(default)]
    pub unchanged: u64,
}

impl UploadAnswer {
    /// An answer.
    pub fn new(upserted: u64, deleted: u64, unchanged: u64) -> Self {
        UploadAnswer {
            upserted,
            deleted,
            unchanged,
        }
    }
}

/// `GET ext/{feature id}/records`: what the cloud holds in an extension channel,
/// `{"@odata.count", "value": [{"key", "record", "updated"}]}`, ordered by key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExtRecords {
    /// The number of records.
    #[serde(rename = "@odata.count", default)]
    pub count: u64,
    /// The records.
    #[serde(default)]
    pub value: Vec<ExtRecord>,
}

impl ExtRecords {
    /// The records (the count is their number).
    pub fn new(value: Vec<ExtRecord>) -> Self {
        ExtRecords {
            count: value.len() as u64,
            value,
        }
    }
}

/// One record of [`ExtRecords`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExtRecord {
    /// The key.
    pub key: String,
    /// The record as stored.
    pub record: Value,
    /// When it last changed (RFC 3339).
    pub updated: String,
}

impl ExtRecord {
    /// A record.
    pub fn new(key: impl Into<String>, record: Value, updated: impl Into<String>) -> Self {
        ExtRecord {
            key: key.into(),
            record,
            updated: updated.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_status_entry_keeps_a_null_settings_apart_from_an_absent_one() {
        let with_null: PluginStatus =
            serde_json::from_value(json!({"id": "x", "enabled": false, "settings": null})).unwrap();
        assert_eq!(with_null.settings, Some(Value::Null));
        let absent: PluginStatus = serde_json::from_value(json!({"id": "x"})).unwrap();
        assert_eq!(absent.settings, None);
        assert_eq!(
            serde_json::to_value(&with_null).unwrap(),
            json!({"id": "x", "enabled": false, "counts": {}, "settings": null, "last_sync": null})
        );
        let extra: PluginStatus =
            serde_json::from_value(json!({"id": "x", "effective_authority": "intune"})).unwrap();
        assert_eq!(extra.extra["effective_authority"], "intune");
        assert_eq!(
            serde_json::to_value(&extra).unwrap()["effective_authority"],
            "intune"
        );
    }

    #[test]
    fn an_upload_body_reads_raw_records() {
        let text = r#"{"upserts":[{"key":"1","record":{"a":1}}],"deletes":["2"]}"#;
        let body: UploadBody<&serde_json::value::RawValue> = serde_json::from_str(text).unwrap();
        assert_eq!(body.upserts[0].record.get(), r#"{"a":1}"#);
        assert_eq!(body.deletes, ["2"]);
        let answer = UploadAnswer::new(1, 2, 3);
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"upserted":1,"deleted":2,"unchanged":3}"#
        );
    }
}

/// An order-independent digest of what a channel holds: how many records there are and, for
/// each, its key together with the xxh3-64 hash of its JSON bytes exactly as the uploader sent
/// them (the *sent hash*, the same number the client keeps in its ledger). Each record counts as
/// `xxh3_64_with_seed(key, sent hash)` and the digest is the wrapping sum of those, so it does
/// not depend on order, and a lost key, a foreign key or a record whose content someone else
/// changed (another sent hash for the same key) all change it. The cloud computes it over what
/// it holds on a channel and the client over what its ledger says was acknowledged; when the
/// two differ, the client reconciles the channel before its delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyDigest {
    /// Records counted.
    pub count: u64,
    /// Wrapping sum of `xxh3_64_with_seed(key, sent hash)`.
    pub sum: u64,
}

/// The sent hash of a record the cloud holds without knowing what was sent (stored before the
/// cloud recorded sent hashes): matches no ledger entry, so the client sends the record again.
pub const UNKNOWN_SENT_HASH: u64 = 0;

impl KeyDigest {
    /// Counts one record: its key and the hash of its JSON bytes as sent.
    pub fn add(&mut self, key: &str, sent_hash: u64) {
        self.count += 1;
        // Seeding the key's hash with the content hash ties the two together: swapping the
        // contents of two keys changes the sum, which adding the two hashes would not.
        self.sum = self.sum.wrapping_add(xxhash_rust::xxh3::xxh3_64_with_seed(
            key.as_bytes(),
            sent_hash,
        ));
    }

    /// Takes back one record [`KeyDigest::add`] counted, with the hash it was counted with: what
    /// a ledger does when a record changes or goes, so its digest follows without a recount.
    pub fn remove(&mut self, key: &str, sent_hash: u64) {
        self.count = self.count.wrapping_sub(1);
        self.sum = self.sum.wrapping_sub(xxhash_rust::xxh3::xxh3_64_with_seed(
            key.as_bytes(),
            sent_hash,
        ));
    }

    /// The digest of `records` (key, sent hash).
    pub fn of<'a>(records: impl IntoIterator<Item = (&'a str, u64)>) -> KeyDigest {
        let mut d = KeyDigest::default();
        for (k, h) in records {
            d.add(k, h);
        }
        d
    }

    /// The sum as 16 lower-case hexadecimal digits, as the census carries it.
    pub fn sum_hex(&self) -> String {
        format!("{:016x}", self.sum)
    }
}

/// `GET upload/{channel}`: what the cloud holds on one upload channel of a hierarchy,
/// `{"channel", "records", "key_digest"}` (`key_digest`: [`KeyDigest::sum_hex`], over the keys
/// and the sent hashes of their records).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelCensus {
    /// The channel, as in the upload path (`devices`, `ext/<feature id>`, …).
    #[serde(default)]
    pub channel: String,
    /// Records held.
    pub records: u64,
    /// The digest of their keys and sent hashes.
    pub key_digest: String,
}

impl ChannelCensus {
    /// The census of `channel` holding records with `digest`.
    pub fn new(channel: impl Into<String>, digest: KeyDigest) -> Self {
        ChannelCensus {
            channel: channel.into(),
            records: digest.count,
            key_digest: digest.sum_hex(),
        }
    }

    /// Whether the records counted in `digest` are the records this census describes.
    pub fn matches(&self, digest: &KeyDigest) -> bool {
        self.records == digest.count && self.key_digest.eq_ignore_ascii_case(&digest.sum_hex())
    }
}

/// One record a channel holds, as `upload/{channel}/keys` lists it: `{"key", "hash"}`, the hash
/// being the record's sent hash as 16 lower-case hexadecimal digits (all zeros: unknown,
/// [`UNKNOWN_SENT_HASH`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeldRecord {
    /// Record key.
    pub key: String,
    /// xxh3-64 of the record's JSON bytes as they were sent.
    #[serde(with = "hex_u64")]
    pub hash: u64,
}

impl HeldRecord {
    /// A held record.
    pub fn new(key: impl Into<String>, hash: u64) -> Self {
        HeldRecord {
            key: key.into(),
            hash,
        }
    }
}

/// A `u64` as 16 hexadecimal digits (JSON numbers lose precision above 2^53 in many readers).
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != 16 {
            return Err(serde::de::Error::custom(format!(
                "a hash is 16 hexadecimal digits, not {s:?}"
            )));
        }
        u64::from_str_radix(&s, 16).map_err(|_| {
            serde::de::Error::custom(format!("a hash is 16 hexadecimal digits, not {s:?}"))
        })
    }
}

/// `GET upload/{channel}/keys[?after=KEY]`: one page of the records a channel holds, in byte
/// order of their keys, `{"value": [{"key", "hash"}…], "next_after": KEY | null}`; ask again
/// with `after=next_after` until it is null.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelKeys {
    /// Records of this page.
    pub value: Vec<HeldRecord>,
    /// The last key of this page when more follow.
    #[serde(default)]
    pub next_after: Option<String>,
}

impl ChannelKeys {
    /// A page of held records.
    pub fn new(value: Vec<HeldRecord>, next_after: Option<String>) -> Self {
        ChannelKeys { value, next_after }
    }
}

#[cfg(test)]
mod key_digest_tests {
    use super::*;

    #[test]
    fn the_digest_ignores_order_and_sees_a_missing_swapped_or_changed_record() {
        let a = KeyDigest::of([("1", 10), ("2", 20), ("3", 30)]);
        assert_eq!(a, KeyDigest::of([("3", 30), ("1", 10), ("2", 20)]));
        assert_ne!(a, KeyDigest::of([("1", 10), ("2", 20)]));
        assert_ne!(a, KeyDigest::of([("1", 10), ("2", 20), ("4", 30)]));
        // Same keys, one record's content changed by another writer.
        assert_ne!(a, KeyDigest::of([("1", 10), ("2", 21), ("3", 30)]));
        // Same keys and hashes, two contents swapped between keys.
        assert_ne!(a, KeyDigest::of([("1", 20), ("2", 10), ("3", 30)]));
        let census = ChannelCensus::new("devices", a);
        assert!(census.matches(&a));
        assert!(!census.matches(&KeyDigest::of([("1", 10), ("2", 20), ("3", 31)])));
        assert!(ChannelCensus::new("x", KeyDigest::default()).matches(&KeyDigest::default()));
    }

    #[test]
    fn a_keys_page_carries_each_hash_as_16_hex_digits() {
        let page = ChannelKeys::new(
            vec![HeldRecord::new("7", 0xab), HeldRecord::new("8", 0)],
            None,
        );
        let text = serde_json::to_string(&page).unwrap();
        assert_eq!(
            text,
            r#"{"value":[{"key":"7","hash":"00000000000000ab"},{"key":"8","hash":"0000000000000000"}],"next_after":null}"#
        );
        assert_eq!(serde_json::from_str::<ChannelKeys>(&text).unwrap(), page);
        let bad = r#"{"value":[{"key":"7","hash":"ab"}]}"#;
        let e = serde_json::from_str::<ChannelKeys>(bad).unwrap_err();
        assert!(e.to_string().contains("16 hexadecimal digits"), "{e}");
    }
}

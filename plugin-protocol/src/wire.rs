//! The process protocol: what a plugin in its own process and the host say to each other over
//! the child's standard input and output — one JSON object per line (newline-delimited JSON, at
//! most [`MAX_LINE`] bytes), the same plain-data requests and answers that cross the in-process
//! boundary. `docs/plugin-protocol.md` documents it for authors in any language.
//!
//! 1. The host writes [`Message::Hello`]; the plugin answers [`Message::Hello`] with its
//!    manifest (or an `error`, one line, when it cannot run).
//! 2. For each lifecycle step the host writes [`Message::Call`]; the plugin may ask the host
//!    for what it needs with [`Message::Host`] (the host answers each with [`Message::Reply`]),
//!    and ends the step with [`Message::Result`].
//! 3. A `devices` host call streams the inventory: the host writes [`Message::Devices`]
//!    batches; after each, the plugin may make host calls and then writes [`Message::Next`];
//!    after the last batch the host writes the call's [`Message::Reply`].
//! 4. The host closes the plugin's standard input when it is done; the plugin exits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the process protocol (an integer; the host refuses any other).
pub const WIRE_VERSION: u32 = 1;

/// The longest line either side may write, in bytes.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// Devices per batch of a `devices` stream.
pub const WIRE_DEVICE_BATCH: usize = 512;

/// One message: a JSON object with a `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// The opening exchange. From the host: `protocol` and `host` (its name and version).
    /// From the plugin: `protocol` and its `manifest`, or an `error` saying why it cannot run.
    Hello {
        /// [`WIRE_VERSION`].
        protocol: u32,
        /// The host's name and version (host → plugin).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The plugin's manifest (plugin → host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<Value>,
        /// Why the plugin cannot run, one line (plugin → host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A lifecycle step (host → plugin): `op` is `validate`, `check`, `settings`, `plan`,
    /// `apply`, `sync`, `status`, `disable`, `action` or `explain`, with its request.
    Call {
        /// The call's id.
        id: u64,
        /// The step.
        op: String,
        /// Its request.
        request: Value,
    },
    /// The step's answer (plugin → host): `ok` with the step's result, or `error` (a message)
    /// when the plugin could not run the step.
    Result {
        /// The call's id.
        id: u64,
        /// The result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Value>,
        /// Why the step could not run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A request to the host (plugin → host): `method` with its `args`.
    Host {
        /// The request's id (the plugin's own numbering).
        id: u64,
        /// The host method.
        method: String,
        /// Its arguments.
        #[serde(default)]
        args: Value,
    },
    /// The host's answer to a [`Message::Host`]: `ok`, or `error` (`{"code", "message"}`).
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Value>,
        /// The host error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
    },
    /// A batch of a `devices` stream (host → plugin).
    Devices {
        /// The `devices` request's id.
        id: u64,
        /// The devices, as the inventory model writes them (without their extension data): a
        /// JSON array, kept as its text so that neither side builds a tree of it
        /// ([`parse_line`] reads it without one).
        #[serde(deserialize_with = "raw_from_tree")]
        devices: Box<serde_json::value::RawValue>,
        /// The extension data of the devices that carry any, as `[index, object]` pairs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extensions: Vec<(u32, serde_json::Map<String, Value>)>,
        /// Whether tenant attach uploads each device of the batch (`is_uploaded`), by index.
        #[serde(default)]
        uploaded: Vec<bool>,
    },
    /// The plugin has handled a batch (plugin → host).
    Next {
        /// The `devices` request's id.
        id: u64,
    },
}

/// A `devices` message as the host writes it (`type` first), read without building a tree of
/// its devices.
#[derive(Deserialize)]
struct DevicesLine {
    #[serde(rename = "type")]
    _kind: String,
    id: u64,
    devices: Box<serde_json::value::RawValue>,
    #[serde(default)]
    extensions: Vec<(u32, serde_json::Map<String, Value>)>,
    #[serde(default)]
    uploaded: Vec<bool>,
}

/// A tagged enum reads its fields from a buffered tree, which a raw value cannot come from:
/// the slow path, for a `devices` message that does not start with its `type`.
fn raw_from_tree<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Box<serde_json::value::RawValue>, D::Error> {
    let v = Value::deserialize(d)?;
    serde_json::value::RawValue::from_string(v.to_string()).map_err(serde::de::Error::custom)
}

/// Reads one line as a message; a host's `devices` batch is read without a tree of its devices.
pub fn parse_line(line: &[u8]) -> Result<Message, serde_json::Error> {
    if line.starts_with(br#"{"type":"devices""#) {
        let d: DevicesLine = serde_json::from_slice(line)?;
        return Ok(Message::Devices {
            id: d.id,
            devices: d.devices,
            extensions: d.extensions,
            uploaded: d.uploaded,
        });
    }
    serde_json::from_slice(line)
}

impl Message {
    /// One line: the message as JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_tagged_json_objects() {
        let m = Message::Call {
            id: 3,
            op: "check".into(),
            request: json!({"options": {}}),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "call", "id": 3, "op": "check", "request": {"options": {}}})
        );
        let back: Message =
            serde_json::from_str(r#"{"type":"result","id":3,"ok":{"findings":[]}}"#).unwrap();
        assert!(matches!(
            back,
            Message::Result {
                id: 3,
                ok: Some(_),
                error: None
            }
        ));
        assert!(m.to_line().ends_with(b"\n"));
    }

    #[test]
    fn a_devices_batch_reads_the_same_on_the_fast_path_and_the_tagged_one() {
        let m = Message::Devices {
            id: 7,
            devices: serde_json::value::RawValue::from_string(r#"[{"resource_id":1}]"#.into())
                .unwrap(),
            extensions: vec![],
            uploaded: vec![true],
        };
        let line = m.to_line();
        let Message::Devices {
            id,
            devices,
            uploaded,
            ..
        } = parse_line(&line).unwrap()
        else {
            panic!("not a batch")
        };
        assert_eq!(
            (id, devices.get(), uploaded),
            (7, r#"[{"resource_id":1}]"#, vec![true])
        );
        // Keys in another order take the tagged path and read the same.
        let other = br#"{"id":7,"uploaded":[true],"devices":[{"resource_id":1}],"type":"devices"}"#;
        let Message::Devices { devices, .. } = parse_line(other).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(devices.get(), r#"[{"resource_id":1}]"#);
    }
}

//! The plugin's side of the process boundary: the child process that loads one plugin library
//! and runs it, speaking the process protocol ([`cloudattach_plugin_protocol::wire`]) with the
//! parent over its standard input and output. It does nothing but run the plugin: every host
//! service (the inventory, the cloud, uploads) is a request to the parent, which does the I/O.
//!
//! Anything the library itself prints on standard output goes to standard error instead: the
//! protocol keeps the process's original standard output to itself.

use super::load::load_library;
use cloudattach_plugin_protocol::wire::{MAX_LINE, Message, WIRE_VERSION};
use cloudattach_plugin_protocol::{RECORD_BATCH, host_error_from_json};
use cloudattach_sdk::{
    CollectionInfo, Device, DeviceMembership, DeviceParts, Environment, Host, HostError, Method,
    Options, Record, RecordSink, SiteInfo, SyncMode, SyncStats,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The two ends of the protocol, one message at a time.
pub(super) struct Wire {
    input: Input,
    output: Box<dyn Write + Send>,
    /// The longest line read.
    max_line: usize,
}

/// Where messages are read from: the stream itself (the child), or lines a reader thread
/// takes off it, read up to a deadline (the parent: a child that holds its output open and
/// says nothing cannot keep the parent waiting past a call's limit).
enum Input {
    Direct(Box<dyn BufRead + Send>),
    Lines {
        lines: std::sync::mpsc::Receiver<Result<Vec<u8>, WireError>>,
        deadline: Option<std::time::Instant>,
    },
}

/// One line of at most `max` bytes, `Closed` at the end of the stream.
fn read_line(input: &mut dyn BufRead, max: usize) -> Result<Vec<u8>, WireError> {
    let mut line = Vec::new();
    let n = input
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(WireError::Io)?;
    if n == 0 {
        return Err(WireError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > max {
            WireError::Protocol(format!("a message longer than {max} bytes"))
        } else {
            WireError::Closed
        });
    }
    Ok(line)
}

/// What went wrong on the wire.
#[derive(Debug)]
pub(super) enum WireError {
    /// The other side closed the stream.
    Closed,
    /// A line that is not a message, or is too long.
    Protocol(String),
    /// An I/O error.
    Io(std::io::Error),
    /// The deadline passed before a message came.
    TimedOut,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Closed => f.write_str("the stream was closed"),
            WireError::Protocol(m) => write!(f, "protocol violation: {m}"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::TimedOut => f.write_str("no message before the deadline"),
        }
    }
}

impl Wire {
    pub(super) fn new(input: Box<dyn BufRead + Send>, output: Box<dyn Write + Send>) -> Wire {
        Wire {
            input: Input::Direct(input),
            output,
            max_line: MAX_LINE,
        }
    }

    /// The parent's end: lines of at most `max_line` bytes read by a thread of their own, so
    /// that [`Wire::recv`] can give up at the deadline ([`Wire::set_deadline`]).
    pub(super) fn threaded(
        mut input: Box<dyn BufRead + Send>,
        output: Box<dyn Write + Send>,
        max_line: usize,
    ) -> Wire {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            loop {
                let line = read_line(&mut *input, max_line);
                let end = line.is_err();
                if tx.send(line).is_err() || end {
                    return;
                }
            }
        });
        Wire {
            input: Input::Lines {
                lines: rx,
                deadline: None,
            },
            output,
            max_line,
        }
    }

    /// The time after which [`Wire::recv`] gives up (`None`: never).
    pub(super) fn set_deadline(&mut self, at: Option<std::time::Instant>) {
        if let Input::Lines { deadline, .. } = &mut self.input {
            *deadline = at;
        }
    }

    /// Writes one message.
    pub(super) fn send(&mut self, m: &Message) -> Result<(), WireError> {
        self.output
            .write_all(&m.to_line())
            .and_then(|()| self.output.flush())
            .map_err(WireError::Io)
    }

    /// Reads one message: a line of at most [`MAX_LINE`] bytes holding one JSON message.
    pub(super) fn recv(&mut self) -> Result<Message, WireError> {
        let line = match &mut self.input {
            Input::Direct(input) => read_line(&mut **input, self.max_line)?,
            Input::Lines { lines, deadline } => {
                let got = match deadline {
                    Some(at) => lines
                        .recv_timeout(at.saturating_duration_since(std::time::Instant::now()))
                        .map_err(|e| match e {
                            std::sync::mpsc::RecvTimeoutError::Timeout => WireError::TimedOut,
                            std::sync::mpsc::RecvTimeoutError::Disconnected => WireError::Closed,
                        })?,
                    None => lines.recv().map_err(|_| WireError::Closed)?,
                };
                got?
            }
        };
        cloudattach_plugin_protocol::wire::parse_line(&line).map_err(|e| {
            let shown: String = String::from_utf8_lossy(&line).chars().take(80).collect();
            WireError::Protocol(format!("not a message ({e}): {:?}", shown.trim_end()))
        })
    }
}

/// Runs the child: loads `library`, answers the parent's hello with its manifest (or the
/// one-line load error), then runs each call until the parent closes standard input. Returns
/// the process's exit code.
pub fn serve_library(library: &Path) -> i32 {
    let output = protocol_stdout();
    let input = Box::new(BufReader::new(std::io::stdin()));
    let mut wire = Wire::new(input, output);
    match wire.recv() {
        Ok(Message::Hello { protocol, .. }) if protocol == WIRE_VERSION => {}
        Ok(Message::Hello { protocol, .. }) => {
            let _ = wire.send(&Message::Hello {
                protocol: WIRE_VERSION,
                host: None,
                manifest: None,
                error: Some(format!(
                    "the host speaks process protocol {protocol}, this plugin host {WIRE_VERSION}"
                )),
            });
            return 2;
        }
        _ => return 2,
    }
    let lib = match load_library(library) {
        Ok(lib) => lib,
        Err(e) => {
            let _ = wire.send(&Message::Hello {
                protocol: WIRE_VERSION,
                host: None,
                manifest: None,
                error: Some(e.to_string()),
            });
            return 0;
        }
    };
    let manifest = serde_json::to_value(lib.plugin.manifest_ref()).unwrap_or(Value::Null);
    if wire
        .send(&Message::Hello {
            protocol: WIRE_VERSION,
            host: None,
            manifest: Some(manifest),
            error: None,
        })
        .is_err()
    {
        return 2;
    }
    let wire = Mutex::new(wire);
    loop {
        let message = wire.lock().expect("wire").recv();
        let (id, op, request) = match message {
            Ok(Message::Call { id, op, request }) => (id, op, request),
            Err(WireError::Closed) => return 0,
            Ok(other) => {
                eprintln!("plugin host: unexpected message from the host: {other:?}");
                return 3;
            }
            Err(e) => {
                eprintln!("plugin host: {e}");
                return 3;
            }
        };
        let pipe = PipeHost::new(&wire);
        let uses_host = cloudattach_plugin_protocol::Op::from_name(&op)
            .map(|o| o.uses_host())
            .unwrap_or(true);
        let answer = lib.plugin.call_raw(
            &op,
            &request.to_string(),
            uses_host.then_some(&pipe as &dyn Host),
        );
        drop(pipe);
        let result = match answer {
            Ok(json) => match serde_json::from_str::<Value>(&json) {
                Ok(v) => Message::Result {
                    id,
                    ok: Some(v),
                    error: None,
                },
                Err(e) => Message::Result {
                    id,
                    ok: None,
                    error: Some(format!("its `{op}` answer is not readable: {e}")),
                },
            },
            Err(message) => Message::Result {
                id,
                ok: None,
                error: Some(message),
            },
        };
        if wire.lock().expect("wire").send(&result).is_err() {
            return 2;
        }
    }
}

/// The process's standard output for the protocol alone: a duplicate of it is kept for the
/// protocol, and standard output itself is pointed at standard error, so a library that prints
/// cannot break a message.
fn protocol_stdout() -> Box<dyn Write + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned()
            && rustix::stdio::dup2_stdout(std::io::stderr().as_fd()).is_ok()
        {
            return Box::new(std::io::BufWriter::new(std::fs::File::from(fd)));
        }
    }
    Box::new(std::io::stdout())
}

/// The [`Host`] a library in the child process sees: every method is a request to the parent.
struct PipeHost<'w> {
    wire: &'w Mutex<Wire>,
    next_id: Mutex<u64>,
    site: OnceLock<SiteInfo>,
    environment: OnceLock<Environment>,
    /// The batch of the innermost `devices` stream being visited: resource id → uploaded.
    batch: Mutex<HashMap<i64, bool>>,
}

impl<'w> PipeHost<'w> {
    fn new(wire: &'w Mutex<Wire>) -> Self {
        PipeHost {
            wire,
            next_id: Mutex::new(0),
            site: OnceLock::new(),
            environment: OnceLock::new(),
            batch: Mutex::new(HashMap::new()),
        }
    }

    fn id(&self) -> u64 {
        let mut n = self.next_id.lock().expect("id");
        *n += 1;
        *n
    }

    /// One request and its reply.
    fn request(&self, method: &str, args: Value) -> Result<Value, HostError> {
        let id = self.id();
        let mut wire = self.wire.lock().expect("wire");
        wire.send(&Message::Host {
            id,
            method: method.into(),
            args,
        })
        .map_err(lost)?;
        match wire.recv().map_err(lost)? {
            Message::Reply {
                id: got,
                ok,
                error: None,
            } if got == id => Ok(ok.unwrap_or(Value::Null)),
            Message::Reply {
                id: got,
                error: Some(e),
                ..
            } if got == id => Err(host_error_from_json(&e.to_string())),
            other => Err(HostError::new(
                "plugin-boundary",
                format!("the host answered {method} with {other:?}"),
            )),
        }
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, method: &str, args: Value) -> Option<T> {
        self.request(method, args)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }

    fn stream(&self, parts: DeviceParts, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        let id = self.id();
        // The request and the first answer under one hold of the wire, as each `next` and the
        // answer after it: another thread of the plugin asking the host meanwhile cannot take a
        // batch for its reply.
        let mut message = {
            let mut wire = self.wire.lock().expect("wire");
            wire.send(&Message::Host {
                id,
                method: "devices".into(),
                args: json!({ "parts": parts }),
            })
            .map_err(lost)?;
            wire.recv().map_err(lost)?
        };
        loop {
            // The lock is not held while the plugin visits: it may ask the host meanwhile.
            match message {
                Message::Devices {
                    id: got,
                    devices,
                    extensions,
                    uploaded,
                } if got == id => {
                    let mut batch: Vec<Device> =
                        serde_json::from_str(devices.get()).map_err(|e| {
                            HostError::new("plugin-boundary", format!("unreadable devices: {e}"))
                        })?;
                    for (i, ext) in extensions {
                        if let Some(d) = batch.get_mut(i as usize) {
                            d.extension = ext;
                        }
                    }
                    let flags: HashMap<i64, bool> = batch
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (d.resource_id, uploaded.get(i).copied().unwrap_or(false)))
                        .collect();
                    let outer = std::mem::replace(&mut *self.batch.lock().expect("batch"), flags);
                    for d in &batch {
                        visit(d);
                    }
                    *self.batch.lock().expect("batch") = outer;
                    let mut wire = self.wire.lock().expect("wire");
                    wire.send(&Message::Next { id }).map_err(lost)?;
                    message = wire.recv().map_err(lost)?;
                }
                Message::Reply {
                    id: got,
                    error: None,
                    ..
                } if got == id => return Ok(()),
                Message::Reply {
                    id: got,
                    error: Some(e),
                    ..
                } if got == id => return Err(host_error_from_json(&e.to_string())),
                other => {
                    return Err(HostError::new(
                        "plugin-boundary",
                        format!("unexpected message in a device stream: {other:?}"),
                    ));
                }
            }
        }
    }
}

fn lost(e: WireError) -> HostError {
    HostError::new("plugin-boundary", format!("the host connection: {e}"))
}

impl Host for PipeHost<'_> {
    fn site(&self) -> &SiteInfo {
        self.site.get_or_init(|| {
            self.typed("site", Value::Null).unwrap_or_else(|| {
                SiteInfo::new("???", "unknown", cloudattach_sdk::SiteVersion(0), "")
            })
        })
    }
    fn environment(&self) -> Environment {
        *self.environment.get_or_init(|| {
            self.typed("environment", Value::Null)
                .unwrap_or(Environment::Public)
        })
    }
    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        self.stream(DeviceParts::ALL, visit)
    }
    fn for_each_device_with(
        &self,
        parts: DeviceParts,
        visit: &mut dyn FnMut(&Device),
    ) -> Result<(), HostError> {
        self.stream(parts, visit)
    }
    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        self.typed("collection", json!({ "id": id }))
    }
    fn collections(&self) -> Vec<CollectionInfo> {
        self.typed("collections", Value::Null).unwrap_or_default()
    }
    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        self.typed(
            "is_member",
            json!({ "collection_id": collection_id, "resource_id": resource_id }),
        )
        .unwrap_or(false)
    }
    fn memberships(&self, resource_id: i64) -> Vec<DeviceMembership> {
        self.typed("memberships", json!({ "resource_id": resource_id }))
            .unwrap_or_default()
    }
    fn feature_options(&self, plugin_id: &str) -> Option<Options> {
        self.typed("feature_options", json!({ "plugin_id": plugin_id }))
    }
    fn is_uploaded(&self, device: &Device) -> bool {
        if let Some(up) = self.batch.lock().expect("batch").get(&device.resource_id) {
            return *up;
        }
        self.typed("is_uploaded", json!({ "device": device }))
            .unwrap_or(false)
    }
    fn cloud(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, HostError> {
        self.request(
            "cloud",
            json!({ "method": method, "path": path, "body": body }),
        )
    }
    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        let sink = self.request("open_sync", json!({ "channel": channel, "mode": mode }))?;
        Ok(Box::new(PipeSink {
            host: self,
            sink,
            buffer: Vec::new(),
        }))
    }
    fn device_events(
        &self,
        resource_id: i64,
        since: Option<&str>,
    ) -> Result<Vec<cloudattach_sdk::TimelineEvent>, HostError> {
        let v = self.request(
            "device_events",
            json!({ "resource_id": resource_id, "since": since }),
        )?;
        serde_json::from_value(v)
            .map_err(|e| HostError::new("plugin-boundary", format!("unreadable events: {e}")))
    }
    fn log(&self, message: &str) {
        let _ = self.request("log", json!({ "message": message }));
    }
}

/// An upload the parent holds open, fed in batches.
struct PipeSink<'h, 'w> {
    host: &'h PipeHost<'w>,
    sink: Value,
    buffer: Vec<Record>,
}

impl PipeSink<'_, '_> {
    fn flush(&mut self) -> Result<(), HostError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.buffer);
        self.host
            .request(
                "sync_push",
                json!({ "sink": self.sink, "records": records }),
            )
            .map(|_| ())
    }
}

impl RecordSink for PipeSink<'_, '_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        self.buffer.push(record);
        if self.buffer.len() >= RECORD_BATCH as usize {
            self.flush()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<SyncStats, HostError> {
        self.flush()?;
        let v = self
            .host
            .request("sync_finish", json!({ "sink": self.sink }))?;
        serde_json::from_value(v)
            .map_err(|e| HostError::new("plugin-boundary", format!("unreadable stats: {e}")))
    }
}

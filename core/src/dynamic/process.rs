//! A plugin in its own process: [`ProcessPlugin`] implements [`Plugin`] by running each step in
//! a child process — the plugin host (`cloudattach plugin-host --library FILE`) for a plugin
//! library, or the plugin's own executable for a plugin written in any language — and answering
//! the child's requests for host services with the real host, so that every piece of I/O stays
//! in this process. A child that dies, breaks the protocol, outgrows its memory limit or
//! overruns a call's time limit ends only that call: the step fails with what happened, the
//! child is killed and reaped, and the next call starts a new one.

use super::child::{Wire, WireError};
use cloudattach_plugin_protocol::wire::{Message, WIRE_DEVICE_BATCH, WIRE_VERSION};
use cloudattach_plugin_protocol::{
    ActionRequest, ExplainRequest, Op, OptionsRequest, PlanRequest, SyncRequest, ValidateRequest,
};
use cloudattach_sdk::dynamic::{failed_finding, failed_step};
use cloudattach_sdk::{
    ActionCall, ActionError, ActionResult, ApplyOutcome, CheckReport, Device, DeviceParts,
    Explanation, Finding, Host, HostError, Manifest, Method, Options, PlanDecision, Plugin, Record,
    RecordSink, StatusReport, SyncMode, SyncStats, ValidateContext,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The longest line a plugin may write, in bytes: its answers, requests and batches of records
/// are much smaller; what it writes is parsed in this process, whose memory the plugin's limit
/// does not bound.
pub const MAX_PLUGIN_LINE: usize = 8 * 1024 * 1024;

/// The environment variable naming the plugin host program (the `cloudattach` binary by
/// default: the program that is running).
pub const PLUGIN_HOST_ENV: &str = "CLOUDATTACH_PLUGIN_HOST";

/// How a plugin's child process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A plugin library, run by the plugin host.
    Library(PathBuf),
    /// An executable that speaks the protocol itself.
    Executable(PathBuf),
}

impl Launch {
    fn file(&self) -> &Path {
        match self {
            Launch::Library(p) | Launch::Executable(p) => p,
        }
    }

    fn command(&self) -> Result<Command, String> {
        match self {
            Launch::Library(lib) => {
                let mut c = Command::new(host_program()?);
                c.arg("plugin-host").arg("--library").arg(lib);
                Ok(c)
            }
            Launch::Executable(exe) => Ok(Command::new(exe)),
        }
    }
}

/// The program that runs a plugin library in its own process: [`PLUGIN_HOST_ENV`] when set;
/// else the running program when it is `cloudattach`; else a `cloudattach-plugin-host` or
/// `cloudattach` beside it (or one directory up, as a test binary sits under `deps/`).
fn host_program() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(PLUGIN_HOST_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the plugin host program: {e}"))?;
    if exe.file_stem().is_some_and(|s| s == "cloudattach") {
        return Ok(exe);
    }
    let dirs = exe
        .parent()
        .into_iter()
        .chain(exe.parent().and_then(Path::parent));
    for dir in dirs {
        for name in ["cloudattach-plugin-host", "cloudattach"] {
            let p = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "cannot find the plugin host program beside {}: set {PLUGIN_HOST_ENV} to the cloudattach binary",
        exe.display()
    ))
}

/// The limits of a plugin's child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The longest each call may take, by step (`manifest`, `check`, …).
    pub timeouts: BTreeMap<String, Duration>,
    /// The child's address-space limit, in bytes (`None`: unlimited).
    pub memory_bytes: Option<u64>,
}

/// The default limit of a step, in seconds: a minute for the steps that only read, longer for
/// those that upload.
pub fn default_timeout(op: &str) -> Duration {
    Duration::from_secs(match op {
        "apply" | "sync" => 3600,
        "disable" => 600,
        "action" => 600,
        _ => 60,
    })
}

/// The cap on any step's limit.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// The default memory limit of a plugin's child process: 2 GiB of address space.
pub const DEFAULT_MEMORY_BYTES: u64 = 2 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeouts: BTreeMap::new(),
            memory_bytes: Some(DEFAULT_MEMORY_BYTES),
        }
    }
}

impl Limits {
    /// The limit of one step.
    pub fn timeout(&self, op: &str) -> Duration {
        self.timeouts
            .get(op)
            .copied()
            .unwrap_or_else(|| default_timeout(op))
            .min(MAX_TIMEOUT)
    }
}

/// A running child.
struct Running {
    child: Child,
    wire: Wire,
    next_id: u64,
}

/// How a child ended a call it did not finish.
#[derive(Debug)]
enum Failure {
    /// It overran the step's limit.
    TimedOut(Duration),
    /// It ended (exit code or signal), or closed its output.
    Died(String),
    /// It wrote something that is not the protocol.
    Protocol(String),
    /// It could not be started.
    Start(String),
}

/// A plugin in its own process.
pub struct ProcessPlugin {
    manifest: Manifest,
    path: PathBuf,
    launch: Launch,
    limits: Limits,
    running: Mutex<Option<Running>>,
}

/// Starts a plugin's child process and reads its manifest. The error is one line naming the
/// file: the plugin's own (a library that fails its checks says why, as in-process loading
/// does) or what happened to the child.
pub fn start_process_plugin(launch: Launch, limits: Limits) -> Result<ProcessPlugin, String> {
    let path = launch.file().to_path_buf();
    let (running, manifest) = spawn(&launch, &limits).map_err(|f| match f {
        Failure::Start(m) => m,
        other => format!(
            "{}: {}",
            path.display(),
            describe(&other, "manifest", &limits)
        ),
    })?;
    let executable = matches!(launch, Launch::Executable(_));
    let manifest: Manifest = serde_json::from_value(manifest).map_err(|e| {
        if executable {
            format!(
                "{}: its manifest is not what the plugin protocol describes ({e}); fix the manifest the plugin sends in its hello (docs/plugin-protocol.md)",
                path.display()
            )
        } else {
            format!(
                "{}: its manifest is not readable ({e}); rebuild the plugin against this cloudattach's SDK",
                path.display()
            )
        }
    })?;
    // The limits the plugin declares where the administrator set none, within the cap.
    let mut limits = limits;
    for (step, secs) in &manifest.timeouts {
        limits
            .timeouts
            .entry(step.clone())
            .or_insert_with(|| Duration::from_secs(*secs).min(MAX_TIMEOUT));
    }
    Ok(ProcessPlugin {
        manifest,
        path,
        launch,
        limits,
        running: Mutex::new(Some(running)),
    })
}

/// Starts the child and exchanges hellos: its manifest, or the one-line reason it cannot run.
fn spawn(launch: &Launch, limits: &Limits) -> Result<(Running, Value), Failure> {
    let file = launch.file().display().to_string();
    let mut command = launch.command().map_err(Failure::Start)?;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Its own process group, so that stopping it stops whatever it started too.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    // Started and registered under the lock, so that a stop on Ctrl-C sees every child.
    let mut registered = children();
    let mut child = command
        .spawn()
        .map_err(|e| Failure::Start(format!("{file}: cannot start the plugin process: {e}")))?;
    registered.insert(child.id());
    drop(registered);
    #[cfg(target_os = "linux")]
    if let Some(bytes) = limits.memory_bytes {
        let limit = rustix::process::Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        let pid = rustix::process::Pid::from_raw(child.id() as i32);
        let _ = rustix::process::prlimit(pid, rustix::process::Resource::As, limit);
    }
    let stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take().expect("piped");
    let mut wire = Wire::threaded(
        Box::new(BufReader::with_capacity(1 << 16, stdout)),
        Box::new(BufWriter::with_capacity(1 << 16, stdin)),
        MAX_PLUGIN_LINE,
    );
    wire.set_deadline(Some(std::time::Instant::now() + limits.timeout("manifest")));
    let mut running = Running {
        child,
        wire,
        next_id: 0,
    };
    let watchdog = Watchdog::start(running.child.id(), limits.timeout("manifest"));
    // A child may answer (or break the protocol) before it reads the hello, and exit: what it
    // wrote is read even when writing the hello failed.
    let sent = running.wire.send(&Message::Hello {
        protocol: WIRE_VERSION,
        host: Some(concat!("cloudattach ", env!("CARGO_PKG_VERSION")).into()),
        manifest: None,
        error: None,
    });
    let hello = match (running.wire.recv(), sent) {
        (Err(WireError::Closed | WireError::Io(_)), Err(e)) => Err(e),
        (got, _) => got,
    };
    let timed_out = watchdog.stop() | matches!(hello, Err(WireError::TimedOut));
    match hello {
        Ok(Message::Hello {
            protocol,
            manifest: Some(m),
            error: None,
            ..
        }) if protocol == WIRE_VERSION => Ok((running, m)),
        Ok(Message::Hello { error: Some(e), .. }) => {
            end(&mut running);
            // A library's own load error already names its file.
            Err(Failure::Start(if e.contains(&file) {
                e
            } else {
                format!("{file}: {e}")
            }))
        }
        Ok(Message::Hello { protocol, .. }) => {
            end(&mut running);
            Err(Failure::Start(format!(
                "{file}: speaks plugin process protocol {protocol}; this cloudattach speaks {WIRE_VERSION}: update the plugin"
            )))
        }
        Ok(other) => {
            end(&mut running);
            Err(Failure::Protocol(format!(
                "it answered the hello with {}",
                kind(&other)
            )))
        }
        Err(e) => {
            let status = end(&mut running);
            Err(failure(
                e,
                status,
                timed_out.then(|| limits.timeout("manifest")),
            ))
        }
    }
}

/// The process groups of the plugin processes running now (each child leads its own).
fn children() -> std::sync::MutexGuard<'static, std::collections::HashSet<u32>> {
    static CHILDREN: std::sync::OnceLock<Mutex<std::collections::HashSet<u32>>> =
        std::sync::OnceLock::new();
    CHILDREN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Kills a plugin process's group: it and anything it started.
fn kill_group(pid: u32) {
    #[cfg(unix)]
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Stops every plugin process this process started (on Ctrl-C or SIGTERM, before exiting).
pub fn stop_plugin_processes() {
    for pid in children().drain() {
        kill_group(pid);
    }
}

/// Kills and reaps a child; what its end was.
fn end(running: &mut Running) -> String {
    kill_group(running.child.id());
    let _ = running.child.kill();
    children().remove(&running.child.id());
    match running.child.wait() {
        Ok(status) => exit_description(status),
        Err(e) => format!("could not be reaped: {e}"),
    }
}

fn failure(e: WireError, status: String, timed_out: Option<Duration>) -> Failure {
    if let Some(limit) = timed_out {
        return Failure::TimedOut(limit);
    }
    match e {
        WireError::Protocol(m) => Failure::Protocol(m),
        WireError::Closed | WireError::Io(_) => Failure::Died(status),
        WireError::TimedOut => Failure::Died(format!("{status} after it stopped answering")),
    }
}

/// `exited with code 77`, `killed by signal SIGSEGV (11)`.
pub fn exit_description(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {} ({sig})", signal_name(sig));
        }
    }
    match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => "ended".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

fn describe(f: &Failure, op: &str, limits: &Limits) -> String {
    match f {
        Failure::TimedOut(limit) => format!(
            "exceeded {} s in {op}; its process was stopped",
            limit.as_secs()
        ),
        Failure::Died(how) => {
            let memory = limits
                .memory_bytes
                .filter(|_| {
                    how.contains("SIGABRT") || how.contains("SIGSEGV") || how.contains("SIGKILL")
                })
                .map(|b| format!(" (its memory limit is {} MiB)", b >> 20))
                .unwrap_or_default();
            format!("its process {how} in {op}{memory}")
        }
        Failure::Protocol(m) => {
            format!("broke the plugin protocol in {op} ({m}); its process was stopped")
        }
        Failure::Start(m) => m.clone(),
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "a hello",
        Message::Call { .. } => "a call",
        Message::Result { .. } => "a result",
        Message::Host { .. } => "a host request",
        Message::Reply { .. } => "a reply",
        Message::Devices { .. } => "devices",
        Message::Next { .. } => "a next",
    }
}

/// Kills a process when a call overruns its limit, unless stopped first.
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    fired: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(pid: u32, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = std::sync::Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                kill_group(pid);
                #[cfg(unix)]
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        });
        Watchdog {
            stop: Some(tx),
            fired,
            thread: Some(thread),
        }
    }

    /// Stops it; whether it had fired.
    fn stop(mut self) -> bool {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

impl ProcessPlugin {
    /// The file the plugin comes from (a library or an executable).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn id(&self) -> &str {
        &self.manifest.id
    }

    /// The manifest read when the process started.
    pub fn manifest_ref(&self) -> &Manifest {
        &self.manifest
    }

    /// Runs one step in the child and reads its answer; a child that failed is replaced at the
    /// next call.
    fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        request: &impl Serialize,
        host: Option<&dyn Host>,
    ) -> Result<T, String> {
        let op = op.as_str();
        let request =
            serde_json::to_value(request).map_err(|e| format!("cannot write the request: {e}"))?;
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let (running, _) = spawn(&self.launch, &self.limits)
                .map_err(|f| describe(&f, "manifest", &self.limits))?;
            *guard = Some(running);
        }
        let running = guard.as_mut().expect("just started");
        running.next_id += 1;
        let id = running.next_id;
        let limit = self.limits.timeout(op);
        running
            .wire
            .set_deadline(Some(std::time::Instant::now() + limit));
        let watchdog = Watchdog::start(running.child.id(), limit);
        let outcome = running
            .wire
            .send(&Message::Call {
                id,
                op: op.into(),
                request,
            })
            .and_then(|()| serve(&mut running.wire, id, host));
        // Either the watchdog or the read's deadline may see the limit pass first.
        let timed_out = watchdog.stop() | matches!(outcome, Err(WireError::TimedOut));
        match outcome {
            Ok(Ok(v)) if !timed_out => serde_json::from_value(v)
                .map_err(|e| format!("its `{op}` answer is not readable: {e}")),
            Ok(Err(message)) if !timed_out => Err(message),
            other => {
                let status = end(running);
                *guard = None;
                let f = match other {
                    Err(e) => failure(e, status, timed_out.then_some(limit)),
                    Ok(_) => Failure::TimedOut(limit),
                };
                Err(describe(&f, op, &self.limits))
            }
        }
    }
}

/// The uploads a call's child has open, by handle; dropped unfinished with the call.
struct Uploads<'h> {
    sinks: HashMap<u64, Box<dyn RecordSink + 'h>>,
    next: u64,
}

/// Serves the child's requests until it answers call `id`: `Ok(Ok(value))`, `Ok(Err(message))`
/// when the plugin could not run the step, `Err` when the wire broke.
fn serve(
    wire: &mut Wire,
    id: u64,
    host: Option<&dyn Host>,
) -> Result<Result<Value, String>, WireError> {
    let mut uploads = Uploads {
        sinks: HashMap::new(),
        next: 0,
    };
    loop {
        match wire.recv()? {
            Message::Result { id: got, ok, error } if got == id => {
                return Ok(match error {
                    Some(e) => Err(e),
                    None => Ok(ok.unwrap_or(Value::Null)),
                });
            }
            Message::Host {
                id: hid,
                method,
                args,
            } => {
                let Some(host) = host else {
                    reply(
                        wire,
                        hid,
                        Err(HostError::new(
                            "plugin-boundary",
                            "this step gets no host services",
                        )),
                    )?;
                    continue;
                };
                if method == "devices" {
                    stream_devices(wire, hid, host, &args, &mut uploads)?;
                } else {
                    let answer = answer_request(host, &mut uploads, &method, args);
                    reply(wire, hid, answer)?;
                }
            }
            other => {
                return Err(WireError::Protocol(format!(
                    "{} where a host request or the result was expected",
                    kind(&other)
                )));
            }
        }
    }
}

/// Any host request but `devices`: the uploads, and the methods that answer at once.
fn answer_request<'h>(
    host: &'h dyn Host,
    uploads: &mut Uploads<'h>,
    method: &str,
    args: Value,
) -> Result<Value, HostError> {
    match method {
        "open_sync" => {
            let a: SyncArgs = serde_json::from_value(args).map_err(bad_args)?;
            let sink = host.open_sync(&a.channel, a.mode)?;
            uploads.next += 1;
            uploads.sinks.insert(uploads.next, sink);
            Ok(json!(uploads.next))
        }
        "sync_push" => {
            let a: PushArgs = serde_json::from_value(args).map_err(bad_args)?;
            let sink = uploads
                .sinks
                .get_mut(&a.sink)
                .ok_or_else(|| unknown_sink(a.sink))?;
            a.records.into_iter().try_for_each(|r| sink.push(r))?;
            Ok(Value::Null)
        }
        "sync_finish" => {
            let a: SinkArgs = serde_json::from_value(args).map_err(bad_args)?;
            let sink = uploads
                .sinks
                .remove(&a.sink)
                .ok_or_else(|| unknown_sink(a.sink))?;
            Ok(json!(sink.finish()?))
        }
        _ => answer_host(host, method, args),
    }
}

#[derive(serde::Deserialize)]
struct SyncArgs {
    channel: String,
    mode: SyncMode,
}

#[derive(serde::Deserialize)]
struct PushArgs {
    sink: u64,
    records: Vec<Record>,
}

#[derive(serde::Deserialize)]
struct SinkArgs {
    sink: u64,
}

fn bad_args(e: serde_json::Error) -> HostError {
    HostError::new("plugin-boundary", format!("unreadable arguments: {e}"))
}

fn unknown_sink(n: u64) -> HostError {
    HostError::new("plugin-boundary", format!("no upload {n} is open"))
}

fn reply(wire: &mut Wire, id: u64, answer: Result<Value, HostError>) -> Result<(), WireError> {
    wire.send(&match answer {
        Ok(v) => Message::Reply {
            id,
            ok: Some(v),
            error: None,
        },
        Err(e) => Message::Reply {
            id,
            ok: None,
            error: Some(serde_json::to_value(&e).unwrap_or(Value::Null)),
        },
    })
}

fn missing(method: &str, key: &str, kind: &str) -> HostError {
    HostError::new(
        "plugin-boundary",
        format!("{method}: the argument `{key}` must be {kind}"),
    )
}

/// The host methods that answer at once.
fn answer_host(host: &dyn Host, method: &str, args: Value) -> Result<Value, HostError> {
    // A missing or mistyped argument is an error the plugin sees, never a quiet default.
    let text = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| missing(method, k, "a string"))
    };
    let int = |k: &str| {
        args.get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| missing(method, k, "an integer"))
    };
    Ok(match method {
        "site" => json!(host.site()),
        "environment" => json!(host.environment()),
        "collection" => json!(host.collection(&text("id")?)),
        "collections" => json!(host.collections()),
        "is_member" => json!(host.is_member(&text("collection_id")?, int("resource_id")?)),
        "memberships" => json!(host.memberships(int("resource_id")?)),
        "feature_options" => json!(host.feature_options(&text("plugin_id")?)),
        "is_uploaded" => {
            let d: Device = serde_json::from_value(args.get("device").cloned().unwrap_or_default())
                .map_err(bad_args)?;
            json!(host.is_uploaded(&d))
        }
        "cloud" => {
            let m: Method = serde_json::from_value(args.get("method").cloned().unwrap_or_default())
                .map_err(bad_args)?;
            let body = args.get("body").filter(|b| !b.is_null());
            host.cloud(m, &text("path")?, body)?
        }
        "device_events" => {
            let since = args.get("since").and_then(Value::as_str);
            json!(host.device_events(int("resource_id")?, since)?)
        }
        "log" => {
            host.log(&text("message")?);
            Value::Null
        }
        other => {
            return Err(HostError::new(
                "plugin-boundary",
                format!("the host has no method `{other}`"),
            ));
        }
    })
}

/// Streams the inventory to the child in batches; after each, serves the child's requests until
/// it says `next`. Ends with the request's reply.
fn stream_devices<'h>(
    wire: &mut Wire,
    id: u64,
    host: &'h dyn Host,
    args: &Value,
    uploads: &mut Uploads<'h>,
) -> Result<(), WireError> {
    // No `parts`: every device whole. Unreadable ones are refused.
    let parts: DeviceParts = match args.get("parts").filter(|p| !p.is_null()) {
        None => DeviceParts::ALL,
        Some(p) => match serde_json::from_value(p.clone()) {
            Ok(parts) => parts,
            Err(e) => {
                return reply(
                    wire,
                    id,
                    Err(HostError::new(
                        "plugin-boundary",
                        format!(
                            "devices: unreadable `parts` ({e}); expected {{\"defender\": bool, \"analytics\": bool, \"extension\": bool}}"
                        ),
                    )),
                );
            }
        },
    };
    // The batch's devices written straight as a JSON array's text.
    let mut batch: Vec<u8> = Vec::with_capacity(WIRE_DEVICE_BATCH * 512);
    let mut count = 0usize;
    let mut extensions: Vec<(u32, serde_json::Map<String, Value>)> = Vec::new();
    let mut uploaded: Vec<bool> = Vec::with_capacity(WIRE_DEVICE_BATCH);
    let mut broken: Option<WireError> = None;
    // Waits for the child to finish the batch it was sent, serving its requests meanwhile.
    let wait = |wire: &mut Wire, uploads: &mut Uploads<'h>| -> Result<(), WireError> {
        loop {
            match wire.recv()? {
                Message::Next { id: got } if got == id => return Ok(()),
                Message::Host {
                    id: hid,
                    method,
                    args,
                } if method != "devices" => {
                    // Anything but a stream within the stream: a plugin pushes its records as
                    // it reads the devices.
                    let answer = answer_request(host, uploads, &method, args);
                    reply(wire, hid, answer)?;
                }
                other => {
                    return Err(WireError::Protocol(format!(
                        "{} in a device stream",
                        kind(&other)
                    )));
                }
            }
        }
    };
    // Sends a batch once the child is done with the one before: the next batch is written
    // while the child handles this one.
    let mut pending = false;
    let mut flush = |wire: &mut Wire,
                     uploads: &mut Uploads<'h>,
                     batch: &mut Vec<u8>,
                     count: &mut usize,
                     extensions: &mut Vec<(u32, serde_json::Map<String, Value>)>,
                     uploaded: &mut Vec<bool>|
     -> Result<(), WireError> {
        if *count == 0 {
            return Ok(());
        }
        batch.push(b']');
        let text = String::from_utf8(std::mem::take(batch)).unwrap_or_else(|_| "[]".into());
        let devices = serde_json::value::RawValue::from_string(text)
            .map_err(|e| WireError::Protocol(format!("a device batch: {e}")))?;
        *count = 0;
        if pending {
            wait(wire, uploads)?;
        }
        wire.send(&Message::Devices {
            id,
            devices,
            extensions: std::mem::take(extensions),
            uploaded: std::mem::take(uploaded),
        })?;
        pending = true;
        Ok(())
    };
    let streamed = host.for_each_device_with(parts, &mut |d: &Device| {
        if broken.is_some() {
            return;
        }
        if !d.extension.is_empty() {
            extensions.push((count as u32, d.extension.clone()));
        }
        uploaded.push(host.is_uploaded(d));
        batch.push(if count == 0 { b'[' } else { b',' });
        let _ = serde_json::to_writer(&mut batch, d);
        count += 1;
        if count >= WIRE_DEVICE_BATCH
            && let Err(e) = flush(
                wire,
                uploads,
                &mut batch,
                &mut count,
                &mut extensions,
                &mut uploaded,
            )
        {
            broken = Some(e);
        }
    });
    if let Some(e) = broken {
        return Err(e);
    }
    flush(
        wire,
        uploads,
        &mut batch,
        &mut count,
        &mut extensions,
        &mut uploaded,
    )?;
    if pending {
        wait(wire, uploads)?;
    }
    reply(wire, id, streamed.map(|()| Value::Null))
}

super::plugin::plugin_over_calls!(ProcessPlugin);

impl Drop for ProcessPlugin {
    fn drop(&mut self) {
        if let Some(mut r) = self
            .running
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            // Closing its input ends a well-behaved child; then its group (whatever it started,
            // or the child itself if it is stuck) is killed — before it is reaped, so the group
            // id cannot be another's by then.
            drop(r.wire);
            std::thread::sleep(Duration::from_millis(5));
            kill_group(r.child.id());
            let _ = r.child.kill();
            let _ = r.child.wait();
            children().remove(&r.child.id());
        }
    }
}

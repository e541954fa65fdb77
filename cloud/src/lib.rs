//! # cloudattach-cloud
//!
//! The local cloud tenant service of cloudattach (`cloudattach cloud serve`): Entra ID-compatible
//! sign-in (OpenID discovery, JWKS, RFC 8628 device code, client credentials, rotating refresh
//! tokens), Graph-style app registration, the attach gateway (`/api/v1/...`), the read API and
//! reports, SQLite storage and fault injection. See `docs/cloud-api.md`.

mod actions;
pub mod auth;
mod authorize;
mod body;
mod console;
pub mod error;
mod faults;
mod gateway;
mod graph;
mod identity;
mod ingest;
mod lockout;
mod query;
mod read;
pub mod seed;
mod server;
pub mod store;
pub mod util;

pub use error::CloudError;
pub use ingest::{Channel, prepare_batch};
pub use store::{SqliteStore, Store};

use cloudattach_model::Environment;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `cloudattach cloud serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0 = ephemeral).
    #[arg(long, default_value = "127.0.0.1:8750")]
    pub addr: String,
    /// Data directory (default: ./.cloudattach/cloud).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The environment the service acts as: public, usgov or china.
    #[arg(long, default_value = "public")]
    pub environment: String,
    /// Approve every device code for this seeded user (demos and tests only).
    #[arg(long)]
    pub auto_approve: Option<String>,
    /// Do not seed the development accounts into an empty data dir.
    #[arg(long)]
    pub no_seed: bool,
    /// Probability of answering 429 with Retry-After.
    #[arg(long = "fault-429", default_value_t = 0.0)]
    pub fault_429: f64,
    /// Probability of answering 429 without Retry-After.
    #[arg(long = "fault-429-bare", default_value_t = 0.0)]
    pub fault_429_bare: f64,
    /// Probability of answering 500 or 503.
    #[arg(long = "fault-5xx", default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Probability of closing the connection without an answer.
    #[arg(long = "fault-drop", default_value_t = 0.0)]
    pub fault_drop: f64,
    /// Latency added to every API request, in milliseconds.
    #[arg(long = "fault-latency-ms", default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// At most N write requests per 20 s per app per tenant, then 429 with the seconds left.
    #[arg(long = "rate-limit-writes")]
    pub rate_limit_writes: Option<u32>,
    /// Seed of the fault generator (reproducible runs).
    #[arg(long = "fault-seed")]
    pub fault_seed: Option<u64>,
    /// Keep the body of every upload the cloud accepts, as received, in this directory (created
    /// if missing; one file per batch, numbered in the order they were answered): what a
    /// benchmark replays.
    #[arg(long = "capture-uploads")]
    pub capture_uploads: Option<PathBuf>,
    /// A TOML file with the fault settings (keys named like the flags: `fault-429 = 0.1`, …);
    /// a flag given with a non-default value wins over the file.
    #[arg(long = "fault-config")]
    pub fault_config: Option<PathBuf>,
    /// Largest accepted request body (also after decompression), in bytes.
    #[arg(long = "max-body-bytes", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Polling interval of device codes, in seconds.
    #[arg(long = "device-code-interval-secs", default_value_t = 5, hide = true)]
    pub device_code_interval_secs: u64,
    /// Lifetime of device codes, in seconds.
    #[arg(long = "device-code-expiry-secs", default_value_t = 900, hide = true)]
    pub device_code_expiry_secs: u64,
    /// `Retry-After` seconds of the `--fault-429` answers.
    #[arg(long = "fault-retry-after-secs", default_value_t = 1, hide = true)]
    pub fault_retry_after_secs: u64,
    /// Seconds a client has to send a request's headers (slowloris protection).
    #[arg(long = "header-read-timeout-secs", default_value_t = 10, hide = true)]
    pub header_read_timeout_secs: u64,
    /// Open connections at most; further ones wait in the listen backlog.
    #[arg(long = "max-connections", default_value_t = 1024, hide = true)]
    pub max_connections: usize,
    /// Unfinished (unexpired, unredeemed) device codes per application per tenant; further
    /// device code requests are refused until one ends.
    #[arg(long = "max-device-codes", default_value_t = 1000, hide = true)]
    pub max_device_codes: usize,
    /// Wrong passwords in a row on the sign-in page that lock an account (Entra's default: 10).
    #[arg(long = "lockout-threshold", default_value_t = 10, hide = true)]
    pub lockout_threshold: u32,
    /// Seconds of the first lockout of an account; each further one doubles (Entra's: 60).
    #[arg(long = "lockout-secs", default_value_t = 60, hide = true)]
    pub lockout_secs: u64,
    /// Failed attempts on the sign-in page (wrong user codes or passwords) per client address
    /// per minute, then the address is throttled for the rest of the minute.
    #[arg(
        long = "sign-in-failures-per-address",
        default_value_t = 30,
        hide = true
    )]
    pub sign_in_failures_per_address: u32,
    /// Overrides the timeout of every cloud action, in seconds (tests: an action times out
    /// without waiting for its declared timeout).
    #[arg(long = "action-timeout-secs", hide = true)]
    pub action_timeout_secs: Option<u64>,
    /// Seconds an admin center session may stay idle before it ends.
    #[arg(long = "session-idle-secs", default_value_t = 3600)]
    pub session_idle_secs: u64,
    /// Seconds an admin center session lasts at most, active or not.
    #[arg(long = "session-max-secs", default_value_t = 8 * 3600)]
    pub session_max_secs: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: "127.0.0.1:8750".into(),
            data: None,
            environment: "public".into(),
            auto_approve: None,
            no_seed: false,
            fault_429: 0.0,
            fault_429_bare: 0.0,
            fault_5xx: 0.0,
            fault_drop: 0.0,
            fault_latency_ms: 0,
            rate_limit_writes: None,
            fault_seed: None,
            capture_uploads: None,
            max_body_bytes: 64 * 1024 * 1024,
            fault_config: None,
            device_code_interval_secs: 5,
            device_code_expiry_secs: 900,
            fault_retry_after_secs: 1,
            header_read_timeout_secs: 10,
            max_connections: 1024,
            max_device_codes: 1000,
            lockout_threshold: 10,
            lockout_secs: 60,
            sign_in_failures_per_address: 30,
            action_timeout_secs: None,
            session_idle_secs: 3600,
            session_max_secs: 8 * 3600,
        }
    }
}

impl ServeOptions {
    /// Applies `--fault-config` (if any): values of the file fill the fault options left at
    /// their defaults.
    pub fn with_fault_config(mut self) -> Result<ServeOptions, CloudError> {
        let Some(path) = self.fault_config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CloudError::InvalidOption(format!("--fault-config {}: {e}", path.display()))
        })?;
        let f: FaultFile = toml::from_str(&text).map_err(|e| {
            CloudError::InvalidOption(format!("--fault-config {}: {e}", path.display()))
        })?;
        let p = |flag: f64, file: Option<f64>| {
            if flag == 0.0 {
                file.unwrap_or(0.0)
            } else {
                flag
            }
        };
        self.fault_429 = p(self.fault_429, f.fault_429);
        self.fault_429_bare = p(self.fault_429_bare, f.fault_429_bare);
        self.fault_5xx = p(self.fault_5xx, f.fault_5xx);
        self.fault_drop = p(self.fault_drop, f.fault_drop);
        if self.fault_latency_ms == 0 {
            self.fault_latency_ms = f.fault_latency_ms.unwrap_or(0);
        }
        self.rate_limit_writes = self.rate_limit_writes.or(f.rate_limit_writes);
        self.fault_seed = self.fault_seed.or(f.fault_seed);
        Ok(self)
    }

    /// Checks the options; errors are [`CloudError::InvalidOption`].
    pub fn validate(&self) -> Result<(Environment, SocketAddr), CloudError> {
        let env: Environment = self.environment.parse().map_err(
            |e: cloudattach_model::environment::UnknownEnvironment| {
                CloudError::InvalidOption(e.to_string())
            },
        )?;
        let addr: SocketAddr = self.addr.parse().map_err(|_| {
            CloudError::InvalidOption(format!(
                "--addr {:?} is not HOST:PORT (e.g. 127.0.0.1:8750)",
                self.addr
            ))
        })?;
        for (name, p) in [
            ("--fault-429", self.fault_429),
            ("--fault-429-bare", self.fault_429_bare),
            ("--fault-5xx", self.fault_5xx),
            ("--fault-drop", self.fault_drop),
        ] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(CloudError::InvalidOption(format!(
                    "{name} {p} is not a probability between 0 and 1"
                )));
            }
        }
        if self.rate_limit_writes == Some(0) {
            return Err(CloudError::InvalidOption(
                "--rate-limit-writes must be at least 1".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(CloudError::InvalidOption(
                "--max-body-bytes must be at least 1024".into(),
            ));
        }
        if self.header_read_timeout_secs == 0 {
            return Err(CloudError::InvalidOption(
                "--header-read-timeout-secs must be at least 1".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(CloudError::InvalidOption(
                "--max-connections must be at least 1".into(),
            ));
        }
        for (name, v) in [
            ("--max-device-codes", self.max_device_codes as u64),
            ("--lockout-threshold", u64::from(self.lockout_threshold)),
            ("--lockout-secs", self.lockout_secs),
            (
                "--sign-in-failures-per-address",
                u64::from(self.sign_in_failures_per_address),
            ),
        ] {
            if v == 0 {
                return Err(CloudError::InvalidOption(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        if self.action_timeout_secs == Some(0) {
            return Err(CloudError::InvalidOption(
                "--action-timeout-secs must be at least 1".into(),
            ));
        }
        if self.device_code_interval_secs == 0 {
            return Err(CloudError::InvalidOption(
                "--device-code-interval-secs must be at least 1".into(),
            ));
        }
        if let Some(upn) = &self.auto_approve
            && !upn.contains('@')
        {
            return Err(CloudError::InvalidOption(format!(
                "--auto-approve {upn:?} is not a UPN"
            )));
        }
        Ok((env, addr))
    }

    /// The data dir: `--data` or `./.cloudattach/cloud`.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from(".cloudattach/cloud"))
    }
}

/// The `--fault-config` file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    #[serde(rename = "fault-429")]
    fault_429: Option<f64>,
    #[serde(rename = "fault-429-bare")]
    fault_429_bare: Option<f64>,
    #[serde(rename = "fault-5xx")]
    fault_5xx: Option<f64>,
    #[serde(rename = "fault-drop")]
    fault_drop: Option<f64>,
    #[serde(rename = "fault-latency-ms")]
    fault_latency_ms: Option<u64>,
    #[serde(rename = "rate-limit-writes")]
    rate_limit_writes: Option<u32>,
    #[serde(rename = "fault-seed")]
    fault_seed: Option<u64>,
}

/// A running service.
pub struct RunningCloud {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    seeded: Vec<seed::SeededTenant>,
}

impl RunningCloud {
    /// `http://HOST:PORT` (an unspecified bind address shows as 127.0.0.1).
    pub fn base_url(&self) -> String {
        server::base_url(self.addr)
    }

    /// The well-known development tenants present in the store.
    pub fn seeded_tenants(&self) -> &[seed::SeededTenant] {
        &self.seeded
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningCloud {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the service (binds, migrates/seeds, spawns the server task); returns once it accepts
/// connections.
pub async fn start(opts: ServeOptions) -> Result<RunningCloud, CloudError> {
    let opts = opts.with_fault_config()?;
    let (env, addr) = opts.validate()?;
    let dir = opts.data_dir();
    SqliteStore::refuse_newer(&dir)?;
    store::create_private_dir(&dir)
        .map_err(|e| CloudError::Storage(format!("{}: {e}", dir.display())))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CloudError::Bind {
            addr: opts.addr.clone(),
            source,
        })?;
    let addr = listener.local_addr()?;
    let no_seed = opts.no_seed;
    let dir2 = dir.clone();
    let (store, key) = tokio::task::spawn_blocking(move || -> Result<_, CloudError> {
        let store = SqliteStore::open(&dir2)?;
        if !no_seed && store.is_empty()? {
            seed::seed(&store)?;
        }
        let key = auth::SigningKey::load_or_create(&dir2).map_err(CloudError::Storage)?;
        Ok((store, key))
    })
    .await
    .map_err(|e| CloudError::Storage(e.to_string()))??;
    let store: Arc<dyn Store> = Arc::new(store);
    let seeded = seed::present(&*store)?;
    if let Some(upn) = &opts.auto_approve {
        match store.user_by_upn(upn)? {
            Some(_) => tracing::warn!(
                upn = %upn,
                "AUTO-APPROVE IS ON: every device code for this user is approved without sign-in"
            ),
            None => {
                return Err(CloudError::InvalidOption(format!(
                    "--auto-approve {upn}: no such user"
                )));
            }
        }
    }
    if let Some(capture) = &opts.capture_uploads {
        std::fs::create_dir_all(capture).map_err(|e| {
            CloudError::InvalidOption(format!(
                "--capture-uploads {}: cannot create the directory: {e}",
                capture.display()
            ))
        })?;
    }
    let state = Arc::new(server::AppState::new(
        store,
        key,
        server::base_url(addr),
        env,
        &opts,
    ));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server::run(listener, state, rx));
    Ok(RunningCloud {
        addr,
        shutdown: Some(tx),
        task: Some(task),
        seeded,
    })
}

/// Runs the service until Ctrl-C, printing the URL and the development accounts to stderr.
pub async fn serve(opts: ServeOptions) -> Result<(), CloudError> {
    let auto = opts.auto_approve.clone();
    let env = opts.environment.clone();
    let dir = opts.data_dir();
    let running = start(opts).await?;
    eprintln!(
        "cloudattach cloud tenant service ({env}) listening on {}",
        running.base_url()
    );
    eprintln!("admin center: {}/admin", running.base_url());
    eprintln!("data dir: {}", dir.display());
    eprint!("{}", seed::describe(running.seeded_tenants()));
    if let Some(upn) = auto {
        eprintln!();
        eprintln!(
            "!!! AUTO-APPROVE IS ON: every device code for {upn} is approved without sign-in !!!"
        );
    }
    eprintln!("press Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping");
    running.shutdown().await;
    Ok(())
}

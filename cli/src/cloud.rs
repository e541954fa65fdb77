//! Reaching the cloud: the runtime the session runs on, and the embedded cloud when the
//! configuration's endpoint is `embedded` (started for the command, stopped after it).

use crate::Failure;
use crate::reporter::CliReporter;
use cloudattach_cloud::{RunningCloud, ServeOptions};
use cloudattach_core::ops::connect::{self, Command, Connection};
use cloudattach_core::ops::{CloudTarget, Workspace};
use cloudattach_core::session::Takeover;
use cloudattach_core::state::StateLock;
use cloudattach_core::{Config, Endpoint};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--stay-up`: the embedded cloud keeps serving after the command, until Ctrl-C.
pub static STAY_UP: AtomicBool = AtomicBool::new(false);
/// Set while a finished command's embedded cloud serves on (Ctrl-C then exits 0).
pub static SERVING: AtomicBool = AtomicBool::new(false);

/// The options of the embedded cloud for a configuration: its data in the state directory, the
/// configured environment, the seeded administrator of the configured tenant approved.
pub fn embedded_options(config: &Config) -> ServeOptions {
    ServeOptions {
        addr: "127.0.0.1:0".into(),
        data: Some(config.state_dir().join("cloud")),
        environment: config.environment.as_str().into(),
        auto_approve: Some(format!("admin@{}", config.tenant)),
        device_code_interval_secs: 1,
        ..ServeOptions::default()
    }
}

/// The runtime and, for the embedded endpoint, the running cloud.
pub struct Cloud {
    runtime: tokio::runtime::Runtime,
    embedded: Option<RunningCloud>,
    base_url: String,
    tenant: String,
}

impl Cloud {
    /// Starts what the configuration's endpoint needs.
    pub fn start(config: &Config) -> Result<Cloud, Failure> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        let (base_url, embedded) = match &config.endpoint {
            Endpoint::Url(u) => (u.clone(), None),
            Endpoint::Embedded => {
                let running = runtime
                    .block_on(cloudattach_cloud::start(embedded_options(config)))
                    .map_err(|e| match e {
                        // Its administrator is approved automatically, so the tenant must be a seeded one.
                        cloudattach_cloud::CloudError::InvalidOption(m) if m.contains("auto-approve") => Failure::Input(format!(
                            "[cloud] tenant = {:?}: the embedded cloud has the tenants contoso.example and fabrikam.example; use one of them, or set [cloud] endpoint to a cloud service that has this tenant",
                            config.tenant
                        )),
                        e @ cloudattach_cloud::CloudError::UnsupportedData(_) => Failure::Input(format!("cannot start the embedded cloud: {e}")),
                        other => Failure::Runtime(format!("cannot start the embedded cloud: {other}")),
                    })?;
                tracing::info!("embedded cloud at {}", running.base_url());
                (running.base_url(), Some(running))
            }
        };
        Ok(Cloud {
            runtime,
            embedded,
            base_url,
            tenant: config.tenant.clone(),
        })
    }

    /// Where the session connects.
    pub fn target(&self) -> CloudTarget {
        CloudTarget {
            handle: self.runtime.handle().clone(),
            base_url: self.base_url.clone(),
        }
    }

    /// Stops the embedded cloud — with `--stay-up`, once Ctrl-C is pressed: until then it
    /// serves on, with its admin center (the state lock stays held).
    pub fn stop(self) {
        if let Some(c) = self.embedded {
            if STAY_UP.load(Ordering::SeqCst) {
                eprintln!(
                    "the embedded cloud stays up at {base}: its admin center is {base}/admin \
                     (sign in as admin@{tenant}, password cloudattach-dev); Ctrl-C stops it",
                    base = c.base_url(),
                    tenant = self.tenant
                );
                SERVING.store(true, Ordering::SeqCst);
                self.runtime.block_on(std::future::pending::<()>());
            }
            self.runtime.block_on(c.shutdown());
        } else if STAY_UP.load(Ordering::SeqCst) {
            eprintln!("--stay-up: the endpoint is not the embedded cloud; nothing to keep up");
        }
    }
}

/// The state lock of a command and the cloud it will talk to, before anyone signs in: apply
/// reads the cloud and asks before it connects. Dropped, the cloud goes first and the lock last.
pub struct Started {
    cloud: Cloud,
    lock: Option<StateLock>,
}

impl Started {
    /// Takes the state lock (commands that change things) and starts the cloud.
    pub fn start(ws: &Workspace, command: Command) -> Result<Started, Failure> {
        let lock = connect::lock(ws, command)?;
        let cloud = Cloud::start(&ws.config)?;
        Ok(Started { cloud, lock })
    }

    /// Where the session connects.
    pub fn target(&self) -> CloudTarget {
        self.cloud.target()
    }

    /// Signs in and sets up the app (the command's app policy); `takeover` says what to do
    /// about a hierarchy attached with another app.
    pub fn connect(
        self,
        ws: &Workspace,
        command: Command,
        takeover: Takeover,
    ) -> Result<Connected, Failure> {
        let Started { cloud, lock } = self;
        let conn = connect::connect(
            ws,
            &cloud.target(),
            command,
            Arc::new(CliReporter::new()),
            takeover,
        );
        match conn {
            Ok(conn) => Ok(Connected {
                cloud,
                conn: conn.holding(lock),
            }),
            Err(e) => {
                cloud.stop();
                drop(lock);
                Err(e.into())
            }
        }
    }

    /// Stops the embedded cloud, then releases the lock.
    pub fn close(self) {
        let Started { cloud, lock } = self;
        cloud.stop();
        drop(lock);
    }
}

/// A connection with the cloud it runs against. Dropped without [`Connected::close`] (an
/// error), the cloud goes first and the state lock, which the connection holds, last.
pub struct Connected {
    cloud: Cloud,
    pub conn: Connection,
}

impl Connected {
    /// Takes the state lock (commands that change things), starts the cloud, signs in; a
    /// hierarchy attached with another app is not taken over.
    pub fn open(ws: &Workspace, command: Command) -> Result<Connected, Failure> {
        Connected::open_with(ws, command, Takeover::Refuse)
    }

    /// [`Connected::open`], with what to do about a hierarchy attached with another app.
    pub fn open_with(
        ws: &Workspace,
        command: Command,
        takeover: Takeover,
    ) -> Result<Connected, Failure> {
        Started::start(ws, command)?.connect(ws, command, takeover)
    }

    /// The runtime the session runs on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.cloud.target().handle
    }

    /// Ends the session and stops the embedded cloud.
    pub fn close(self) {
        let Connected { cloud, conn } = self;
        let lock = conn.release();
        cloud.stop();
        drop(lock);
    }
}

/// `init`'s sign-in page: signs in against the configured cloud (starting the embedded one if
/// that is the endpoint) and checks the account; the tokens stay cached for apply.
pub fn sign_in_check(config: &Config) -> Result<String, Failure> {
    let cloud = Cloud::start(config)?;
    let target = cloud.target();
    let result = cloudattach_core::session::sign_in(
        &target.handle,
        &target.base_url,
        config,
        &CliReporter::new(),
    );
    cloud.stop();
    result.map_err(|e| match e {
        cloudattach_core::session::SessionError::Input(m) => Failure::Input(m),
        other => Failure::Runtime(other.to_string()),
    })
}

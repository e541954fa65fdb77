//! A signed-in session with the cloud, split by job:
//!
//! - [`signin`]: the administrator's sign-in (device authorization grant, RFC 8628) and the
//!   token cache;
//! - [`admin`]: the check that the account may attach the site;
//! - [`app`]: the app the site uses — registered, renewed, carried over, or imported and
//!   validated against the tenant;
//! - [`gateway`]: the attach gateway for one hierarchy — onboarding, the [`CloudPort`] the
//!   plugins reach the cloud through, and the [`UploadTarget`] of the sync engine;
//! - [`view`]: what the cloud holds for the hierarchy, read with the administrator's own token
//!   before anything is registered (apply plans against it).
//!
//! [`CloudPort`]: crate::host::CloudPort
//! [`UploadTarget`]: crate::sync_engine::UploadTarget

pub mod admin;
pub mod app;
pub mod docs;
pub mod gateway;
pub mod person;
pub mod signin;
pub mod view;

pub use app::{AppCredentials, REQUIRED_PERMISSIONS};
pub use signin::{Forgotten, forget_tokens};

use crate::client::{Api, ApiError};
use crate::config::{Config, Secret};
use crate::report::Reporter;
use crate::site::Site;
use crate::state::{StateError, StateStore};
use crate::sync_engine::SyncEngine;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;

/// The public client the CLI signs in as; every tenant knows it.
pub const PUBLIC_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c11e";
/// The cloud service's resource id.
pub const RESOURCE: &str = "api://cloudattach";
pub use crate::sync_engine::{BATCH_RECORDS, IN_FLIGHT};

/// An error of a session. `Input` errors are the user's to fix (exit 2, nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bad input: a secret, an imported app, an account without the rights.
    #[error("{0}")]
    Input(String),
    /// The cloud refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Sign-in did not complete.
    #[error("sign-in failed: {0}")]
    SignIn(String),
    /// Local state failed.
    #[error(transparent)]
    State(#[from] StateError),
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a session may register an app when none is registered for the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppPolicy {
    /// Register one (apply).
    RegisterIfMissing,
    /// Fail with an input error that says to run apply (status, sync, disable, detach).
    ExistingOnly,
}

/// What a session does when the hierarchy is attached with another app of the tenant, whose
/// credentials this state directory does not have (attached from another directory, or the
/// local state was lost).
#[derive(Clone)]
pub enum Takeover {
    /// Say which app owns it and how to take it over; change nothing.
    Refuse,
    /// Add a password to the owning app and use it (`--takeover`).
    Allow,
    /// Ask the person (on a terminal); the question is passed in, `true` takes it over.
    Ask(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl std::fmt::Debug for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Takeover::Refuse => "Refuse",
            Takeover::Allow => "Allow",
            Takeover::Ask(_) => "Ask",
        })
    }
}

/// How the command that connects gets its app: whether it may register one, what it does about
/// a hierarchy another app owns, and its name for the hints (`cloudattach <command>
/// --takeover`).
#[derive(Debug, Clone)]
pub struct AppChoice {
    /// Whether it may register an app.
    pub policy: AppPolicy,
    /// What it does about a hierarchy another app owns.
    pub takeover: Takeover,
    /// The command whose `--takeover` the hints name.
    pub command: &'static str,
}

/// A signed-in session: the gateway of one hierarchy with the app's credentials, the sync
/// engine uploading through it, and the reporter that tells the person what happens.
pub struct Session {
    gateway: Arc<gateway::Gateway>,
    /// The administrator's token, for what onboarding may need besides the app's (naming the
    /// app that won a race for the hierarchy, deleting the one this run registered for it).
    admin_token: String,
    /// Where this run kept the credentials of the app it registered, if it registered one.
    registered: Option<std::path::PathBuf>,
    reporter: Arc<dyn Reporter>,
    /// Devices each upload's pass reads, when known (0: not known), for the progress bars.
    expected_records: std::sync::atomic::AtomicU64,
    engine: SyncEngine,
}

/// The wizard's sign-in page on its own (`cloudattach init`): signs the administrator in and
/// checks the account, caching the tokens for the commands that follow. Returns the account.
pub fn sign_in(
    handle: &Handle,
    base_url: &str,
    config: &Config,
    reporter: &dyn Reporter,
) -> Result<String, SessionError> {
    let api = Api::new(base_url, crate::client::RetryPolicy::default())?;
    handle
        .block_on(signin::signed_in_admin(&api, config, reporter))
        .map(|(_, upn)| upn)
}

impl Session {
    /// Asks the cloud for the census of each of `channels` ahead, all at once (see
    /// [`gateway::Gateway::prefetch_census`]); [`Session::forget_prefetched`] at the end of the
    /// round drops those not taken.
    pub fn prefetch_census(&self, channels: &[String]) {
        self.gateway.prefetch_census(channels)
    }

    /// Drops the censuses asked for ahead and not taken.
    pub fn forget_prefetched(&self) {
        self.gateway.forget_prefetched()
    }

    /// The number of devices each upload's pass reads, for the progress bars.
    pub fn expect_records(&self, n: u64) {
        self.expected_records
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn expected_records(&self) -> Option<u64> {
        Some(
            self.expected_records
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .filter(|n| *n > 0)
    }

    /// Tells the person running the command.
    pub fn say(&self, message: &str) {
        self.reporter.say(message);
    }

    /// Signs in (cached token, refresh, or device code) as a Global Administrator with an Intune
    /// license, then imports the configured app (`import_secret` is its secret, read once by
    /// [`crate::config::validate_app_offline`]) or uses the registered one — registering it if
    /// the choice's policy allows: only apply registers; commands that read or turn things off
    /// use the app apply registered. A hierarchy attached with another app of the tenant is
    /// taken over (a password added to that app) only as the choice says. Onboarding is
    /// [`Session::onboard`].
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        handle: Handle,
        base_url: &str,
        config: &Config,
        import_secret: Option<&Secret>,
        site: &Site,
        state: Arc<Mutex<StateStore>>,
        reporter: Arc<dyn Reporter>,
        choice: &AppChoice,
    ) -> Result<Session, SessionError> {
        let import = match (&config.app, import_secret) {
            (Some(app), Some(secret)) => Some((app.clone(), secret.clone())),
            (Some(_), None) => {
                return Err(SessionError::Input(
                    "[cloud.app] the secret was not read: validate the configuration first".into(),
                ));
            }
            (None, _) => None,
        };
        let api = Arc::new(Api::new(base_url, crate::client::RetryPolicy::default())?);
        let tenant = config.tenant.clone();
        let (tokens, upn) =
            handle.block_on(signin::signed_in_admin(&api, config, reporter.as_ref()))?;
        reporter.say(&format!("signed in as {upn}"));
        let tenant_id =
            signin::token_tenant_id(&tokens.access_token).unwrap_or_else(|| tenant.clone());
        let admin = &tokens.access_token;
        let hid = &site.info.hierarchy_id;
        // Who owns the hierarchy, and in which environment, is known before any app is chosen
        // or registered: a mismatch registers nothing, and another app's hierarchy is named.
        let attached = handle.block_on(app::attachment(&api, admin, hid))?;
        handle.block_on(app::check_environment(
            &api,
            admin,
            config,
            hid,
            attached.as_ref(),
        ))?;
        let owner = attached.and_then(|a| a.app_id);
        let (app, registered) = match import {
            Some((app, secret)) => handle
                .block_on(app::validate_import(
                    &api,
                    &tenant,
                    admin,
                    &app,
                    &secret,
                    owner.as_deref(),
                    hid,
                    reporter.as_ref(),
                ))
                .map(|app| (app, None))?,
            None => handle.block_on(app::ensure_registered_app(
                &api,
                config,
                site,
                &tenant_id,
                admin,
                reporter.as_ref(),
                choice,
                owner.as_deref(),
            ))?,
        };
        let gateway = Arc::new(gateway::Gateway::new(
            handle.clone(),
            api,
            tenant,
            app,
            site.info.hierarchy_id.clone(),
        ));
        let engine = SyncEngine::new(handle, gateway.clone(), state);
        Ok(Session {
            gateway,
            admin_token: tokens.access_token.clone(),
            registered,
            reporter,
            // Known without a pass of its own when a pass over this version of the file was
            // made (apply's plan); otherwise the bars count without a total.
            expected_records: site.known_device_count().unwrap_or(0).into(),
            engine,
        })
    }
}

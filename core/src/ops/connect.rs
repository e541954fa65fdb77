//! A cloud connection for the commands that need one: the state (and its lock, for commands
//! that change things), the signed-in session, and the app policy of the command.

use super::{OpError, Workspace, runtime};
use crate::client::ApiError;
use crate::report::Reporter;
use crate::session::{AppChoice, AppPolicy, Session, SessionError, Takeover};
use crate::state::{StateLock, StateStore};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

/// Where the cloud is: its base URL, and the runtime the session's requests run on.
#[derive(Clone)]
pub struct CloudTarget {
    /// The runtime.
    pub handle: Handle,
    /// The base URL (`http://127.0.0.1:…` for the embedded cloud).
    pub base_url: String,
}

/// The command that connects: it decides the lock and the app policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `apply`: locks, and registers an app when none is registered.
    Apply,
    /// `sync`: locks.
    Sync,
    /// `disable`: locks.
    Disable,
    /// `detach`: locks.
    Detach,
    /// `status`: reads only.
    Status,
    /// `connect`: locks only while a sync round writes (it takes the lock itself).
    Connect,
}

impl Command {
    /// The command's name, as the lock file records it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Apply => "apply",
            Command::Sync => "sync",
            Command::Disable => "disable",
            Command::Detach => "detach",
            Command::Status => "status",
            Command::Connect => "connect",
        }
    }
    fn locks(self) -> bool {
        !matches!(self, Command::Status | Command::Connect)
    }
    /// Only apply registers an app; the other commands use the one apply registered.
    fn app_policy(self) -> AppPolicy {
        if self == Command::Apply {
            AppPolicy::RegisterIfMissing
        } else {
            AppPolicy::ExistingOnly
        }
    }
}

/// A live connection: the session and the state it records into, locked while it lives when
/// the command changes things.
pub struct Connection {
    /// The signed-in session.
    pub session: Arc<Session>,
    /// The state.
    pub state: Arc<Mutex<StateStore>>,
    _lock: Option<StateLock>,
}

impl Connection {
    /// The connection, holding the state lock until it is released.
    pub fn holding(mut self, lock: Option<StateLock>) -> Connection {
        self._lock = lock;
        self
    }

    /// Ends the session and closes the state; the lock is returned, to be dropped once
    /// everything the command started (an embedded cloud) has stopped.
    pub fn release(self) -> Option<StateLock> {
        let Connection {
            session,
            state,
            _lock,
        } = self;
        drop(session);
        drop(state);
        _lock
    }
}

/// The state lock of a command that changes things (`None` for one that only reads). Taken
/// first, before the cloud is started or anyone signs in — and before it, a state database
/// written by a newer cloudattach is refused (exit 2), so that such a command neither signs
/// in nor leaves a lock file or an embedded cloud behind.
pub fn lock(ws: &Workspace, command: Command) -> Result<Option<StateLock>, OpError> {
    StateStore::check_version(&ws.config.state_dir())?;
    if command.locks() {
        StateLock::acquire(&ws.config.state_dir(), command.name())
            .map(Some)
            .map_err(runtime)
    } else {
        Ok(None)
    }
}

/// Opens the state, signs in, and sets up the app; `takeover` says what to do when the
/// hierarchy is attached with another app of the tenant. The connection holds no lock until it is
/// given the one [`lock`] took ([`Connection::holding`]), so that on an error the caller
/// releases the lock after everything it started has stopped.
pub fn connect(
    ws: &Workspace,
    target: &CloudTarget,
    command: Command,
    reporter: Arc<dyn Reporter>,
    takeover: Takeover,
) -> Result<Connection, OpError> {
    let state_dir = ws.config.state_dir();
    let state = Arc::new(Mutex::new(StateStore::open(&state_dir)?));
    let session = Session::connect(
        target.handle.clone(),
        &target.base_url,
        &ws.config,
        ws.import_secret(),
        &ws.site,
        state.clone(),
        reporter,
        &AppChoice {
            policy: command.app_policy(),
            takeover,
            command: command.name(),
        },
    )
    .map_err(|e| session_error(ws, e))?;
    Ok(Connection {
        session: Arc::new(session),
        state,
        _lock: None,
    })
}

/// A session error for the person: input errors are theirs to fix; a cloud that cannot be
/// reached gets a hint naming the setting.
pub fn session_error(ws: &Workspace, e: SessionError) -> OpError {
    match e {
        SessionError::Input(m) => OpError::Input(m),
        SessionError::Api(e @ ApiError::Transport { .. }) => {
            let file = ws
                .config
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "attach.toml".into());
            OpError::Runtime(format!(
                "{e}\nhint: check `[cloud] endpoint` in {file}, or start a local cloud with `cloudattach cloud serve`"
            ))
        }
        other => OpError::Runtime(other.to_string()),
    }
}

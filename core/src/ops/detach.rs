//! `detach`: offboards the hierarchy from the tenant (its devices and reports go with it) and
//! forgets the local state.

use super::connect::{Connection, session_error};
use super::{OpError, Workspace, runtime};

/// Offboards and resets the state.
pub fn run(ws: &Workspace, conn: &Connection) -> Result<(), OpError> {
    conn.session.offboard().map_err(|e| session_error(ws, e))?;
    conn.state
        .lock()
        .expect("state lock")
        .reset()
        .map_err(runtime)
}

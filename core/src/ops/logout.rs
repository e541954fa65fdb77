//! `logout`: forgets the administrator's cached sign-in, so the next command that needs it signs
//! in afresh. Needs neither the site nor the cloud; the app's credentials stay.

use super::workspace::{LoadOptions, find_config};
use super::{OpError, runtime};
use crate::config::Config;
use crate::session::{Forgotten, forget_tokens};

/// Forgets the cached tokens of the configured tenant and endpoint (the built-in demo's without
/// a configuration), or with `all` every cached sign-in of the state directory.
pub fn run(options: &LoadOptions, all: bool) -> Result<Forgotten, OpError> {
    let config = match find_config(options)? {
        Some(c) => c,
        None => Config::demo(&std::env::current_dir().map_err(runtime)?),
    };
    forget_tokens(&config, all).map_err(runtime)
}

//! `plugins list` and `plugins inspect`: the registered plugins, the libraries that failed to
//! load, and a library's manifest checked without enabling anything.

use super::workspace::{LoadOptions, find_config, registry_for};
use super::{OpError, input};
use crate::registry::Registry;
use crate::report::Reporter;
use cloudattach_sdk::Manifest;
use std::path::Path;

/// The registry `plugins list` shows: the built-ins and the libraries of the plugin
/// directories (the configuration's too, when there is one).
pub fn list(options: &LoadOptions, reporter: &dyn Reporter) -> Result<Registry, OpError> {
    let config = find_config(options)?;
    registry_for(options, config.as_ref(), reporter)
}

/// A plugin library's manifest.
pub fn inspect(file: &Path) -> Result<Manifest, OpError> {
    crate::dynamic::inspect(file).map_err(input)
}

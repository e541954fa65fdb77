//! `site generate`: a sample site.

use crate::{Cli, Failure, Outcome, Output, input, print_json};
use cloudattach_sdk::{SiteVersion, thousands};
use cloudattach_sitegen::{GenerateError, GenerateOptions, generate_site};
use std::path::Path;

pub fn generate(
    cli: &Cli,
    devices: u64,
    seed: u64,
    out: &Path,
    site_version: SiteVersion,
    force: bool,
) -> Outcome {
    let opts = GenerateOptions {
        devices,
        seed,
        site_version,
        ..Default::default()
    };
    let summary = generate_site(&opts, out, force).map_err(|e| match e {
        // The library names its own parameter; this command's flag is --force.
        GenerateError::WouldOverwrite { dir, files } => Failure::Input(format!(
            "{} already contains {files}; nothing was written. Choose an empty or new output directory, or pass --force to replace the existing site",
            dir.display()
        )),
        other => input(other),
    })?;
    if cli.output == Output::Json {
        return print_json(&serde_json::json!({
            "out": out,
            "devices": summary.devices,
            "clients": summary.clients,
            "collections": summary.collections,
            "bytes_written": summary.bytes_written,
        }));
    }
    eprintln!(
        "wrote a sample site to {}: {} devices ({} with a client), {} collections",
        out.display(),
        thousands(summary.devices),
        thousands(summary.clients),
        summary.collections
    );
    Ok(())
}

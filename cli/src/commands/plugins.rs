//! `plugins list`, `plugins inspect` and `plugins new`.

use crate::render::{Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Outcome, Output, print_json};
use cloudattach_core::ops;
use std::path::Path;

pub fn list(cli: &Cli, include_failures: bool) -> Outcome {
    let registry = ops::plugins::list(&super::load_options(cli), &CliReporter::new())?;
    let rows: Vec<serde_json::Value> = registry
        .iter()
        .map(|p| {
            let m = &p.manifest;
            serde_json::json!({
                "id": m.id,
                "name": m.name,
                "version": m.version,
                "origin": p.origin.kind(),
                "depends_on": m.depends_on,
                "environments": m.environments,
                "min_site_version": m.min_site_version.to_string(),
            })
        })
        .collect();
    if cli.output == Output::Json && include_failures {
        let failures: Vec<serde_json::Value> = registry
            .load_failures
            .iter()
            .map(|f| serde_json::json!({ "path": f.path, "message": f.message }))
            .collect();
        return print_json(&serde_json::json!({ "plugins": rows, "load_failures": failures }));
    }
    if cli.output == Output::Json {
        return print_json(&rows);
    }
    let mut t = Table::new(&[
        "id",
        "name",
        "version",
        "origin",
        "depends on",
        "environments",
        "min site",
    ]);
    for p in registry.iter() {
        let m = &p.manifest;
        let envs = environments(m);
        t.row(vec![
            (m.id.clone(), Tone::Plain),
            (m.name.clone(), Tone::Plain),
            (m.version.clone(), Tone::Plain),
            (p.origin.kind().to_string(), Tone::Dim),
            (
                if m.depends_on.is_empty() {
                    "-".into()
                } else {
                    m.depends_on.join(", ")
                },
                Tone::Plain,
            ),
            (envs.join(", "), Tone::Plain),
            (m.min_site_version.to_string(), Tone::Plain),
        ]);
    }
    print!("{}", t.render(colour_enabled()));
    Ok(())
}

pub fn inspect(cli: &Cli, file: &Path) -> Outcome {
    let m = ops::plugins::inspect(file)?;
    if cli.output == Output::Json {
        return print_json(&m);
    }
    let envs = environments(&m);
    println!("{} {} ({})", m.id, m.version, m.name);
    if !m.description.is_empty() {
        println!("  {}", m.description);
    }
    println!(
        "  depends on        {}",
        if m.depends_on.is_empty() {
            "-".into()
        } else {
            m.depends_on.join(", ")
        }
    );
    println!("  environments      {}", envs.join(", "));
    println!("  min site version  {}", m.min_site_version);
    for o in &m.options {
        let default = o
            .default
            .as_ref()
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        println!(
            "  [features.{}] {}{default}  {}",
            m.id, o.key, o.description
        );
    }
    eprintln!(
        "{}: a valid cloudattach plugin (nothing was enabled)",
        file.display()
    );
    Ok(())
}

/// `plugins new`: writes the crate, says what is next.
pub fn new(
    cli: &Cli,
    id: &str,
    out: Option<&Path>,
    sdk_path: Option<&Path>,
    sdk_git: Option<&str>,
    name: Option<&str>,
) -> Outcome {
    let sdk = match (sdk_path, sdk_git) {
        (Some(p), _) => ops::plugins::SdkSource::Path(p.to_path_buf()),
        (None, Some(url)) => ops::plugins::SdkSource::Git(url.to_string()),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| id.into());
    let made = ops::plugins::new_plugin(id, &dir, &sdk, name)?;
    if cli.output == Output::Json {
        return print_json(&made);
    }
    for f in &made.files {
        eprintln!("wrote {}", f.display());
    }
    eprintln!(
        "next: cd {} && cargo test && cargo build --release, then copy target/release/{} into a plugin directory",
        made.dir.display(),
        made.library
    );
    Ok(())
}

/// A manifest's environments, each with its own minimum site version where it differs.
fn environments(m: &cloudattach_sdk::Manifest) -> Vec<String> {
    m.environments
        .iter()
        .map(|e| {
            let v = m.min_site_version_for(*e);
            if v != m.min_site_version {
                format!("{e} ({v})")
            } else {
                e.to_string()
            }
        })
        .collect()
}

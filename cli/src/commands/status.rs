//! `status`: what the cloud reports now, per plugin.

use crate::cloud::Connected;
use crate::render::{Table, Tone, colour_enabled};
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops;
use cloudattach_core::ops::connect::Command;

pub fn run(cli: &Cli) -> Outcome {
    let ws = super::workspace(cli)?;
    let selection = ops::status::selection(&ws)?;
    let connected = Connected::open(&ws, Command::Status)?;
    let outcome = ops::status::run(&ws, &selection, &connected.conn);
    connected.close();
    let outcome = outcome?;
    let failed = outcome.failed();
    if cli.output == Output::Json {
        // Through a `Value`: keys sorted, as this document always had them.
        print_json(&serde_json::to_value(&outcome).map_err(|e| Failure::Runtime(e.to_string()))?)?;
    } else {
        let colour = colour_enabled();
        let mut t = Table::new(&["plugin", "enabled", "counts", "last sync", "error"]);
        for p in &outcome.plugins {
            let error = &p.error;
            let mut counts = crate::render::counts(&p.counts);
            // Scalar extras (rbac-authority's effective_authority) read well as counts; the
            // applied settings are a JSON object, left to --output json.
            counts.extend(
                p.extra
                    .iter()
                    .filter(|(k, v)| {
                        *k != "settings" && *k != "note" && !v.is_object() && !v.is_array()
                    })
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string())
                        )
                    }),
            );
            t.row(vec![
                (p.id.clone(), Tone::Plain),
                (
                    if p.enabled { "yes" } else { "no" }.into(),
                    if p.enabled { Tone::Good } else { Tone::Dim },
                ),
                (
                    if counts.is_empty() {
                        "-".into()
                    } else {
                        counts.join(", ")
                    },
                    Tone::Plain,
                ),
                (p.last_sync.clone().unwrap_or_else(|| "-".into()), Tone::Dim),
                (error.clone().unwrap_or_else(|| "-".into()), Tone::Bad),
            ]);
        }
        print!("{}", t.render(colour));
        for p in &outcome.plugins {
            if let Some(note) = p.extra.get("note").and_then(|n| n.as_str()) {
                eprintln!("{}: {note}", p.id);
            }
        }
    }
    if failed {
        if let Some(e) = outcome.not_attached() {
            eprintln!("error: {e}");
        }
        Err(Failure::Failed)
    } else {
        Ok(())
    }
}

//! `logout`: forget the cached sign-in tokens; the app's credentials stay.

use crate::{Cli, Outcome, Output, print_json};
use cloudattach_core::ops;

pub fn run(cli: &Cli, all: bool) -> Outcome {
    let forgotten = ops::logout::run(&super::load_options(cli), all)?;
    if cli.output == Output::Json {
        return print_json(&serde_json::json!({
            "file": forgotten.file,
            "removed": forgotten.removed.iter().map(|(tenant, endpoint)| {
                serde_json::json!({ "tenant": tenant, "endpoint": endpoint })
            }).collect::<Vec<_>>(),
            "kept": forgotten.kept.as_ref().map(|(tenant, endpoint)| {
                serde_json::json!({ "tenant": tenant, "endpoint": endpoint })
            }),
        }));
    }
    for (tenant, endpoint) in &forgotten.removed {
        eprintln!(
            "signed out: removed the cached sign-in to {tenant} at {endpoint} ({}); the next command signs in again",
            forgotten.file.display()
        );
    }
    if let Some((tenant, endpoint)) = &forgotten.kept {
        eprintln!(
            "kept the cached sign-in to {tenant} at {endpoint} ({}): it is not this configuration's tenant and endpoint; `cloudattach logout --all` removes it",
            forgotten.file.display()
        );
    }
    if forgotten.removed.is_empty() && forgotten.kept.is_none() {
        eprintln!(
            "not signed in: no cached sign-in in {}",
            forgotten.file.display()
        );
    }
    Ok(())
}

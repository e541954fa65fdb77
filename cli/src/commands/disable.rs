//! `disable`: turn features off in the cloud, dependents first — after showing what goes and
//! asking (the cloud deletes what those features uploaded).

use crate::cloud::Connected;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::config::Endpoint;
use cloudattach_core::ops;
use cloudattach_core::ops::connect::Command;

pub fn run(cli: &Cli, ids: &[String], yes: bool) -> Outcome {
    let ws = super::workspace(cli)?;
    let ordered = ops::disable::validate(&ws, ids)?;
    let selection = ops::disable::selection(&ws)?;
    if !yes {
        let endpoint = match &ws.config.endpoint {
            Endpoint::Embedded => "the embedded local cloud".to_string(),
            Endpoint::Url(u) => u.clone(),
        };
        eprintln!(
            "disable turns these features off in tenant {} ({endpoint}), in this order:",
            ws.config.tenant
        );
        for id in &ordered {
            let name = ws
                .registry
                .get(id)
                .map(|p| p.manifest.name.clone())
                .unwrap_or_default();
            eprintln!("  {id}  {name}");
        }
        eprintln!(
            "The tenant deletes the data they uploaded (their devices and records); a later apply uploads it again."
        );
        if !super::confirm("disable", "Disable these features and delete their data?")? {
            eprintln!("nothing changed");
            return Err(Failure::Failed);
        }
    }
    let connected = Connected::open(&ws, Command::Disable)?;
    let text = cli.output == Output::Text;
    let results = ops::disable::run(&ws, &selection, &connected.conn, &ordered, &mut |d| {
        if text {
            match &d.error {
                None => eprintln!("{}: disabled", d.id),
                Some(e) => eprintln!("{}: failed: {e}", d.id),
            }
        }
    });
    connected.close();
    let failed = results.iter().any(|d| !d.disabled);
    if cli.output == Output::Json {
        print_json(&serde_json::json!({ "plugins": results }))?;
    }
    if failed { Err(Failure::Failed) } else { Ok(()) }
}

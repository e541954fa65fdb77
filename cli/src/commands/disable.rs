//! `disable`: turn features off in the cloud, dependents first.

use crate::cloud::Connected;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops;
use cloudattach_core::ops::connect::Command;

pub fn run(cli: &Cli, ids: &[String]) -> Outcome {
    let ws = super::workspace(cli)?;
    let ordered = ops::disable::validate(&ws, ids)?;
    let selection = ops::disable::selection(&ws)?;
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

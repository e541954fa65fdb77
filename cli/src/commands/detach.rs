//! `detach`: offboard the hierarchy from the tenant.

use crate::cloud::Connected;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops;
use cloudattach_core::ops::connect::Command;

pub fn run(cli: &Cli, yes: bool, takeover: bool) -> Outcome {
    let ws = super::workspace(cli)?;
    if !yes
        && !super::confirm(
            "detach",
            &format!(
                "Offboard hierarchy {} from tenant {}? Its devices and reports are removed from the tenant.",
                ws.site.info.hierarchy_id, ws.config.tenant
            ),
        )?
    {
        eprintln!("nothing changed");
        return Err(Failure::Failed);
    }
    let takeover = super::apply::takeover_choice("detach", takeover);
    let connected = Connected::open_with(&ws, Command::Detach, takeover)?;
    let result = ops::detach::run(&ws, &connected.conn);
    connected.close();
    result?;
    if cli.output == Output::Json {
        print_json(&serde_json::json!({ "detached": ws.site.info.hierarchy_id }))?;
    } else {
        eprintln!(
            "hierarchy {} detached from {}",
            ws.site.info.hierarchy_id, ws.config.tenant
        );
    }
    Ok(())
}

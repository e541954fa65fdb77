//! `explain device` and `explain access`: why, offline, from the site.

use crate::render::{self, Tone, colour_enabled};
use crate::{Cli, Outcome, Output, print_json};
use cloudattach_core::ops::explain::{self, AccessQuery};
use serde_json::Value;

pub fn device(cli: &Cli, resource_id: i64, from_cloud: bool) -> Outcome {
    let ws = super::workspace(cli)?;
    let mut e = explain::device(&ws, resource_id)?;
    if from_cloud {
        let cloud = crate::cloud::Cloud::start(&ws.config)?;
        let target = cloud.target();
        let held = cloudattach_core::session::person::Person::sign_in(
            target.handle.clone(),
            &target.base_url,
            &ws.config,
            &crate::reporter::CliReporter::new(),
            false,
        )
        .map_err(|e| crate::Failure::Runtime(e.to_string()))
        .and_then(|p| Ok(explain::cloud_device(&p, &ws, resource_id)?));
        cloud.stop();
        e.cloud = Some(held?);
    }
    if cli.output == Output::Json {
        return print_json(&e);
    }
    let colour = colour_enabled();
    let yes_no = |v: bool| {
        if v {
            render::paint("yes", Tone::Good, colour)
        } else {
            render::paint("no", Tone::Warn, colour)
        }
    };
    println!("device {} ({})", e.resource_id, e.name);
    println!(
        "  uploaded            {}  {}",
        yes_no(e.uploaded.value),
        e.uploaded.reason
    );
    for (key, section) in &e.sections {
        let Some(map) = section.as_object() else {
            continue;
        };
        let (head, verdict) = if let Some(class) = map.get("class").and_then(Value::as_str) {
            (key.as_str(), class.to_string())
        } else {
            let flag = ["uploaded", "eligible"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_bool));
            (key.as_str(), flag.map(yes_no).unwrap_or_default())
        };
        let reason = map.get("reason").and_then(Value::as_str).unwrap_or("");
        println!("  {head:<19} {verdict}  {reason}");
        if let Some(s) = map.get("scheduled").and_then(Value::as_bool) {
            let why = map
                .get("scheduled_reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            println!("  {:<19} {}  {why}", "  scheduled", yes_no(s));
        }
        if let Some(why) = map.get("feature_reason").and_then(Value::as_str) {
            println!(
                "  {:<19} {}",
                "",
                render::paint(&format!("(feature not enabled: {why})"), Tone::Dim, colour)
            );
        }
        if let Some(err) = map.get("error").and_then(Value::as_str) {
            println!("  {head:<19} {}", render::paint(err, Tone::Bad, colour));
        }
    }
    if let Some(c) = &e.cloud {
        if c["held"] == true {
            let channels: Vec<&str> = ["analytics", "defender", "comanagement"]
                .into_iter()
                .filter(|ch| !c[*ch].is_null())
                .collect();
            println!(
                "  {:<19} {}  last uploaded {}; also held: {}",
                "cloud",
                yes_no(true),
                c["last_uploaded"].as_str().unwrap_or("?"),
                if channels.is_empty() {
                    "nothing else".to_string()
                } else {
                    channels.join(", ")
                }
            );
        } else {
            println!(
                "  {:<19} {}  {}",
                "cloud",
                yes_no(false),
                c["reason"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

pub fn access(
    cli: &Cli,
    user: &str,
    resource_id: i64,
    action: &str,
    intune_roles: &[String],
    use_intune_rbac: Option<bool>,
    from_cloud: bool,
) -> Outcome {
    let ws = super::workspace(cli)?;
    let mut q = AccessQuery {
        user: user.to_string(),
        resource_id,
        action: action.to_string(),
        roles: (!intune_roles.is_empty()).then(|| intune_roles.to_vec()),
        identity: None,
        use_intune_rbac,
        connector: None,
    };
    if from_cloud {
        let cloud = crate::cloud::Cloud::start(&ws.config)?;
        let target = cloud.target();
        let facts = cloudattach_core::session::person::Person::sign_in(
            target.handle.clone(),
            &target.base_url,
            &ws.config,
            &crate::reporter::CliReporter::new(),
            false,
        )
        .map_err(|e| crate::Failure::Runtime(e.to_string()))
        .and_then(|p| Ok(explain::cloud_facts(&p, &ws.site.info.hierarchy_id, user)?));
        cloud.stop();
        let facts = facts?;
        let mut roles = facts.roles;
        roles.extend(intune_roles.iter().cloned());
        q.roles = Some(roles);
        q.identity = facts.identity;
        q.use_intune_rbac = use_intune_rbac.or(facts.use_intune_rbac);
        q.connector = facts.connector;
    }
    let e = explain::access(&ws, &q)?;
    if cli.output == Output::Json {
        return print_json(&e);
    }
    let colour = colour_enabled();
    println!(
        "{user} → {action} on device {resource_id} (declared by {}), authority {}",
        e.feature, e.decision.authority
    );
    for link in &e.decision.chain {
        let mark = match link.ok {
            Some(true) => render::paint("ok     ", Tone::Good, colour),
            Some(false) => render::paint("broken ", Tone::Bad, colour),
            None => render::paint("-      ", Tone::Dim, colour),
        };
        println!("  {mark}{:<17} {}", link.link, link.detail);
    }
    let verdict = match (e.decision.refused_by, e.complete) {
        (Some(link), _) => render::paint(&format!("refused by {link}"), Tone::Bad, colour),
        (None, true) => render::paint("allowed", Tone::Good, colour),
        (None, false) => render::paint(
            "allowed by every link checked here (the links marked - are the cloud's)",
            Tone::Warn,
            colour,
        ),
    };
    println!("  → {verdict}");
    Ok(())
}

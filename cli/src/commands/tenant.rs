//! `tenant …`: the tenant side, signed in as a person of the tenant.

use crate::cloud::Cloud;
use crate::render::{Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Failure, Outcome, Output, TenantCommand, print_json};
use cloudattach_core::ops::tenant::{self, Subject};
use cloudattach_core::session::person::Person;
use cloudattach_sdk::actions::{ActionDoc, ActionResult, ActionStatus};
use serde_json::{Map, Value};

pub fn run(cli: &Cli, command: &TenantCommand) -> Outcome {
    let ws = super::workspace(cli)?;
    let cloud = Cloud::start(&ws.config)?;
    let target = cloud.target();
    let fresh = matches!(command, TenantCommand::Login { fresh: true });
    let person = Person::sign_in(
        target.handle.clone(),
        &target.base_url,
        &ws.config,
        &CliReporter::new(),
        fresh,
    )
    .map_err(|e| match e {
        cloudattach_core::session::SessionError::Input(m) => Failure::Input(m),
        other => Failure::Runtime(other.to_string()),
    });
    let result = person.and_then(|p| {
        let hid = ws.site.info.hierarchy_id.clone();
        run_signed_in(cli, command, &p, &hid)
    });
    cloud.stop();
    result
}

fn run_signed_in(cli: &Cli, command: &TenantCommand, p: &Person, site_hid: &str) -> Outcome {
    let json = cli.output == Output::Json;
    match command {
        TenantCommand::Login { .. } => {
            if json {
                return print_json(&serde_json::json!({"upn": p.upn, "roles": p.roles}));
            }
            println!("signed in as {}", p.upn);
            Ok(())
        }
        TenantCommand::Devices {
            name,
            hierarchy,
            top,
            all,
        } => {
            let v = tenant::devices(p, hierarchy.as_deref(), name.as_deref(), *top, *all)?;
            if json {
                return print_json(&v);
            }
            let mut t = Table::new(&[
                "resource_id",
                "name",
                "os_build",
                "client_version",
                "join_type",
                "hierarchy",
                "last_uploaded",
            ]);
            let rows = v["value"].as_array().cloned().unwrap_or_default();
            for d in &rows {
                t.row(
                    [
                        "resource_id",
                        "name",
                        "os_build",
                        "client_version",
                        "join_type",
                        "hierarchy_id",
                        "last_uploaded",
                    ]
                    .iter()
                    .map(|k| (scalar(&d[*k]), Tone::Plain))
                    .collect(),
                );
            }
            print!("{}", t.render(colour_enabled()));
            eprintln!(
                "{} of {} device(s){}",
                rows.len(),
                v["@odata.count"],
                if v.get("@odata.nextLink").is_some_and(|l| !l.is_null()) {
                    " (more: --all, or --top up to 1000)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        TenantCommand::Device {
            resource_id,
            hierarchy,
        } => {
            let v = tenant::device(p, hierarchy.as_deref().unwrap_or(site_hid), *resource_id)?;
            print_json(&v)
        }
        TenantCommand::Action {
            action,
            device,
            collection,
            params,
            hierarchy,
            wait,
        } => {
            let subject = match (device, collection) {
                (_, Some(c)) => Subject::Collection(c.clone()),
                (Some(d), None) => Subject::Device(*d),
                (None, None) => {
                    return Err(Failure::Input(
                        "name the target: --device RESOURCE_ID or --collection ID".into(),
                    ));
                }
            };
            let parameters = parse_params(params)?;
            let doc = tenant::run_action(
                p,
                hierarchy.as_deref().unwrap_or(site_hid),
                &subject,
                action,
                parameters,
                *wait,
            )?;
            show_action(&doc, json)
        }
        TenantCommand::Show { id } => {
            let doc = tenant::action(p, id)?;
            show_action(&doc, json)
        }
        TenantCommand::Report { name, hierarchy } => {
            let v = tenant::report(p, name, hierarchy.as_deref())?;
            if json {
                return print_json(&v);
            }
            match v.get("value").and_then(Value::as_array) {
                Some(rows) => {
                    print!("{}", table_of(rows));
                    if let Some(s) = v.get("summary") {
                        eprintln!("summary: {s}");
                    }
                    Ok(())
                }
                None => print_json(&v),
            }
        }
        TenantCommand::Rbac { set } => {
            let v = tenant::rbac(p, *set)?;
            if json {
                return print_json(&v);
            }
            println!(
                "Use Intune RBAC: {}",
                if v["use_intune_rbac"] == true {
                    "on"
                } else {
                    "off"
                }
            );
            Ok(())
        }
        TenantCommand::Roles => {
            let v = tenant::roles(p)?;
            if json {
                return print_json(&v);
            }
            let mut t = Table::new(&["user", "roles"]);
            for a in v["assignments"].as_array().cloned().unwrap_or_default() {
                let roles: Vec<String> = a["roles"]
                    .as_array()
                    .map(|r| r.iter().map(scalar).collect())
                    .unwrap_or_default();
                t.row(vec![
                    (scalar(&a["upn"]), Tone::Plain),
                    (roles.join(", "), Tone::Plain),
                ]);
            }
            print!("{}", t.render(colour_enabled()));
            Ok(())
        }
        TenantCommand::Assign { user, roles } => {
            let v = tenant::assign(p, user, roles)?;
            if json {
                return print_json(&v);
            }
            println!("{}: {}", scalar(&v["upn"]), {
                let r: Vec<String> = v["roles"]
                    .as_array()
                    .map(|r| r.iter().map(scalar).collect())
                    .unwrap_or_default();
                if r.is_empty() {
                    "no Intune role".to_string()
                } else {
                    r.join(", ")
                }
            });
            Ok(())
        }
    }
}

/// `NAME=VALUE` pairs; a value that parses as JSON (a number, `true`) is taken as such, any
/// other as text.
fn parse_params(params: &[String]) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Failure::Input(format!(
                "--param {p:?}: expected NAME=VALUE, e.g. --param query='Device | take 5'"
            )));
        };
        let value = match serde_json::from_str::<Value>(v) {
            Ok(j @ (Value::Number(_) | Value::Bool(_))) => j,
            _ => Value::String(v.to_string()),
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// The action's status, then its result (a table, or the document as JSON) or its error; exit
/// 1 unless it succeeded.
fn show_action(doc: &ActionDoc, json: bool) -> Outcome {
    if json {
        print_json(doc)?;
    } else {
        eprintln!(
            "action {} ({}) by {}: {}{}",
            doc.id,
            doc.action,
            doc.requested_by,
            doc.status.as_str(),
            doc.authority
                .as_deref()
                .map(|a| format!(", authority {a}"))
                .unwrap_or_default()
        );
        match (&doc.result, &doc.error) {
            (
                Some(ActionResult::Table {
                    columns,
                    rows,
                    truncated,
                }),
                _,
            ) => {
                let head: Vec<&str> = columns.iter().map(String::as_str).collect();
                let mut t = Table::new(&head);
                for r in rows {
                    t.row(r.iter().map(|v| (scalar(v), Tone::Plain)).collect());
                }
                print!("{}", t.render(colour_enabled()));
                if *truncated {
                    eprintln!("(rows left out: the result limit)");
                }
            }
            (Some(ActionResult::Document { document }), _) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(document).unwrap_or_default()
                );
            }
            (None, Some(e)) => eprintln!("{}: {}", e.code, e.message),
            _ => {}
        }
    }
    match doc.status {
        ActionStatus::Succeeded => Ok(()),
        ActionStatus::Pending | ActionStatus::Running => Ok(()),
        _ => Err(Failure::Failed),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A table of a list's rows: the scalar fields of the first row, in its order.
fn table_of(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return String::new();
    };
    let keys: Vec<&str> = first
        .iter()
        .filter(|(_, v)| !v.is_object() && !v.is_array())
        .map(|(k, _)| k.as_str())
        .collect();
    let mut t = Table::new(&keys);
    for r in rows {
        t.row(keys.iter().map(|k| (scalar(&r[*k]), Tone::Plain)).collect());
    }
    t.render(colour_enabled())
}

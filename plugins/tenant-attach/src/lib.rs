//! The `tenant-attach` plugin: uploads the site's client devices — all of them, or one
//! collection with its subcollections — to the tenant, then delta uploads.
//!
//! Which devices are in scope is the host's [`Host::is_uploaded`] (a client, and in the
//! collection named by the `upload` option unless it is `"all"`), so the other plugins that
//! depend on device upload see exactly the same set.

use cloudattach_sdk::OptionsExt;
use cloudattach_sdk::{
    ActionCall, ActionDecl, ActionError, ActionParameter, ActionSubject, ActionTarget,
    ApplyOutcome, CheckReport, CollectionInfo, ConnectionPoint, Device, DeviceParts, Environment,
    Finding, Host, HostError, Manifest, OptionSpec, Options, ParameterKind, PlanDecision, Plugin,
    Record, SiteVersion, SyncMode, SyncStats, actions, enable_and_upload, settings_action,
    thousands, upload_from_devices,
};
use serde_json::{Value, json};

/// The plugin id.
pub const ID: &str = "tenant-attach";

/// The upload channel of device records.
pub const CHANNEL: &str = "devices";

/// The upload scope: the `upload` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadScope {
    /// Every device with a client.
    All,
    /// The client devices in a collection's effective membership (it and its subcollections).
    Collection(String),
}

impl UploadScope {
    /// Reads the `upload` option; absent means `"all"`.
    pub fn from_options(options: &Options) -> UploadScope {
        match options.text("upload") {
            None | Some("all") => UploadScope::All,
            Some(id) => UploadScope::Collection(id.to_string()),
        }
    }

    /// The value stored in the cloud's settings: `"all"` or the collection id.
    pub fn as_setting(&self) -> &str {
        match self {
            UploadScope::All => "all",
            UploadScope::Collection(id) => id,
        }
    }

    /// The collection, when the scope is one and it exists; `Err` with the id when it does not.
    fn resolve(&self, host: &dyn Host) -> Result<Option<CollectionInfo>, String> {
        match self {
            UploadScope::All => Ok(None),
            UploadScope::Collection(id) => host.collection(id).map(Some).ok_or_else(|| id.clone()),
        }
    }
}

/// The device record the `devices` channel carries: the inventory record without the
/// `defender` and `analytics` blocks, which belong to their own features' channels.
pub fn device_record(device: &Device) -> Record {
    // Without the blocks: `with_parts` copies field by field, never the Defender and analytics
    // blocks it drops.
    let stripped = device.with_parts(DeviceParts::NONE);
    let value = serde_json::to_value(&stripped).unwrap_or(Value::Null);
    Record {
        key: device.resource_id.to_string(),
        value,
    }
}

/// The cloud console's resource explorer: the device's whole inventory record, its collections
/// and client details.
pub fn resource_explorer() -> ActionDecl {
    ActionDecl::new(
        actions::RESOURCE_EXPLORER,
        "Resource explorer",
        ActionTarget::Device,
        &[actions::SITE_READ, actions::SITE_READ_RESOURCE],
        &[actions::INTUNE_VIEW_RESOURCE_EXPLORER],
    )
}

/// The `query` parameter of the CMPivot actions.
fn query_parameter() -> ActionParameter {
    ActionParameter::new(
        "query",
        ParameterKind::String,
        true,
        "the query, in the CMPivot subset of the Kusto query language",
    )
}

/// CMPivot: a query over the site's inventory, from one device.
pub fn cmpivot() -> ActionDecl {
    ActionDecl::new(
        actions::CMPIVOT,
        "CMPivot",
        ActionTarget::Device,
        &[actions::SITE_READ, actions::SITE_RUN_CMPIVOT],
        &[actions::INTUNE_RUN_CMPIVOT],
    )
    .parameter(query_parameter())
}

/// CMPivot over a collection: the query over the collection's effective members.
pub fn cmpivot_collection() -> ActionDecl {
    ActionDecl::new(
        CMPIVOT_COLLECTION,
        "CMPivot (collection)",
        ActionTarget::Collection,
        &[actions::SITE_READ, actions::SITE_RUN_CMPIVOT],
        &[actions::INTUNE_RUN_CMPIVOT],
    )
    .parameter(query_parameter())
}

/// The id of CMPivot over a collection.
pub const CMPIVOT_COLLECTION: &str = "cmpivot-collection";

/// The device's timeline: the events the site knows of it, over the last `hours` (default 24).
pub fn timeline() -> ActionDecl {
    ActionDecl::new(
        actions::TIMELINE,
        "Timeline",
        ActionTarget::Device,
        &[
            actions::SITE_READ,
            actions::SITE_READ_RESOURCE,
            actions::SITE_NOTIFY_RESOURCE,
        ],
        &[actions::INTUNE_VIEW_TIMELINE],
    )
    .parameter(ActionParameter::new(
        "hours",
        ParameterKind::Integer,
        false,
        "how far back, in hours: 1 to 720 (the 30 days the site keeps); 24 unless given",
    ))
}

/// The timeline's window unless the request says otherwise, in hours.
pub const TIMELINE_DEFAULT_HOURS: i64 = 24;
/// The longest window: the 30 days the site keeps, in hours.
pub const TIMELINE_MAX_HOURS: i64 = cloudattach_sdk::timeline::RETENTION_DAYS as i64 * 24;

/// The timeline's answer for one device over the `hours` before `now`: a table `time, kind,
/// detail`, newest first, of the events the site keeps (`Host::device_events`) — uploads that
/// changed the device's records with the fields that changed (a change of its co-management
/// `state` as a `co-management` event), its channels' first uploads, the cloud actions run on
/// it — and the device's own `last_active` from the inventory when it falls in the window.
pub fn timeline_table(
    host: &dyn Host,
    resource_id: i64,
    hours: i64,
    now: time::OffsetDateTime,
) -> Result<cloudattach_sdk::ActionResult, ActionError> {
    use time::format_description::well_known::Rfc3339;
    if !(1..=TIMELINE_MAX_HOURS).contains(&hours) {
        return Err(ActionError::new(
            "bad-parameters",
            format!(
                "\"hours\" must be 1 to {TIMELINE_MAX_HOURS} (30 days, what the site keeps); got {hours}"
            ),
        ));
    }
    let since = now - time::Duration::hours(hours);
    let since_text = since.format(&Rfc3339).unwrap_or_default();
    let events = host
        .device_events(resource_id, Some(&since_text))
        .map_err(|e| ActionError::new(e.code, e.message))?;
    let mut last_active = None;
    let mut found = false;
    host.for_each_device_with(DeviceParts::NONE, &mut |d| {
        if !found && d.resource_id == resource_id {
            found = true;
            last_active = d.last_active.clone();
        }
    })
    .map_err(|e| ActionError::new(e.code, e.message))?;
    if !found && events.is_empty() {
        return Err(ActionError::new(
            "device-not-found",
            format!(
                "site {} has no device with resource id {resource_id}, and keeps no event of one",
                host.site().code
            ),
        ));
    }
    let parse = |t: &str| time::OffsetDateTime::parse(t, &Rfc3339).ok();
    let mut rows: Vec<(Option<time::OffsetDateTime>, Vec<Value>)> = events
        .into_iter()
        .map(|e| {
            let (kind, detail) = timeline_row(&e.kind, e.detail);
            (parse(&e.at), vec![Value::from(e.at), kind.into(), detail])
        })
        .collect();
    if let Some(at) = last_active
        && let Some(t) = parse(&at)
        && t >= since
        && t <= now
    {
        rows.push((
            Some(t),
            vec![
                Value::from(at),
                "last-active".into(),
                json!({ "source": "inventory" }),
            ],
        ));
    }
    // Newest first (stable: the host's order among events of one instant).
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    Ok(cloudattach_sdk::ActionResult::Table {
        columns: vec!["time".into(), "kind".into(), "detail".into()],
        rows: rows.into_iter().map(|(_, r)| r).collect(),
        truncated: false,
    })
}

/// How an event shows in the timeline's table: an upload that changed the co-management
/// `state` (or added a record with one) is a `co-management` event carrying the new state.
fn timeline_row(kind: &str, detail: Value) -> (String, Value) {
    let state_changed = detail["channel"] == "comanagement"
        && detail["state"].is_string()
        && (detail["change"] == "added"
            || detail["fields"]
                .as_array()
                .is_some_and(|f| f.iter().any(|n| n == "state")));
    if kind == "uploaded" && state_changed {
        ("co-management".to_string(), detail)
    } else {
        (kind.to_string(), detail)
    }
}

/// The resource explorer's document for one device, read from the site now: its whole
/// inventory record (with its Defender and analytics blocks and what its line carries beyond
/// the model, none of which tenant attach uploads), its collections with how it is in each, its
/// client details and whether tenant attach uploads it.
pub fn resource_explorer_document(host: &dyn Host, resource_id: i64) -> Result<Value, ActionError> {
    let device = find_device(host, resource_id)?;
    let mut record = serde_json::to_value(&device).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut record {
        for (k, v) in &device.extension {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(json!({
        "resource_id": device.resource_id,
        "name": device.name,
        "inventory": record,
        "collections": host.memberships(resource_id),
        "client": {
            "client": device.client,
            "client_version": device.client_version,
            "client_active": device.client_active,
            "last_active": device.last_active,
            "primary_user": device.primary_user,
        },
        "uploaded": host.is_uploaded(&device),
        "site": host.site().code,
    }))
}

fn find_device(host: &dyn Host, resource_id: i64) -> Result<Device, ActionError> {
    let mut found = None;
    host.for_each_device(&mut |d| {
        if found.is_none() && d.resource_id == resource_id {
            found = Some(d.clone());
        }
    })
    .map_err(|e| ActionError::new(e.code, e.message))?;
    found.ok_or_else(|| {
        ActionError::new(
            "device-not-found",
            format!(
                "site {} has no device with resource id {resource_id}",
                host.site().code
            ),
        )
    })
}

/// Runs a CMPivot query over the site's inventory now: over one device, or over a
/// collection's effective members. A query that does not parse fails with `query-error`, its
/// message pointing at the position.
pub fn run_query(
    host: &dyn Host,
    call: &ActionCall,
) -> Result<cloudattach_sdk::ActionResult, ActionError> {
    let text = call
        .parameters
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| ActionError::new("query-missing", "the parameter \"query\" is required"))?;
    let query =
        cloudattach_query::parse(text).map_err(|e| ActionError::new("query-error", e.render()))?;
    let mut parts = DeviceParts::NONE;
    if query.needs_defender() {
        parts = parts.union(DeviceParts::DEFENDER);
    }
    if query.needs_analytics() {
        parts = parts.union(DeviceParts::ANALYTICS);
    }
    let mut eval = query.evaluator();
    let mut seen = false;
    match &call.subject {
        ActionSubject::Device(id) => host.for_each_device_with(parts, &mut |d| {
            if d.resource_id == *id {
                seen = true;
                eval.push(d);
            }
        }),
        ActionSubject::Collection(c) => {
            if host.collection(c).is_none() {
                return Err(ActionError::new(
                    "collection-not-found",
                    format!("site {} has no collection {c}", host.site().code),
                ));
            }
            seen = true;
            host.for_each_device_with(parts, &mut |d| {
                if !eval.is_done() && host.is_member(c, d.resource_id) {
                    eval.push(d);
                }
            })
        }
    }
    .map_err(|e| ActionError::new(e.code, e.message))?;
    if !seen {
        return Err(ActionError::new(
            "device-not-found",
            format!(
                "site {} has no device with this resource id",
                host.site().code
            ),
        ));
    }
    let table = eval.finish();
    Ok(cloudattach_sdk::ActionResult::Table {
        columns: table.columns,
        rows: table.rows,
        truncated: table.truncated,
    })
}

/// Counts of the site's devices against the upload scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeCounts {
    /// Devices of the site.
    pub total: u64,
    /// Devices with a client.
    pub with_client: u64,
    /// Devices that would be uploaded.
    pub in_scope: u64,
}

impl ScopeCounts {
    /// Counts the site's devices.
    pub fn collect(host: &dyn Host) -> Result<Self, HostError> {
        let mut counts = ScopeCounts::default();
        host.for_each_device(&mut |d| {
            counts.total += 1;
            counts.with_client += u64::from(d.client);
            counts.in_scope += u64::from(host.is_uploaded(d));
        })?;
        Ok(counts)
    }
}

fn missing_collection(host: &dyn Host, id: &str) -> HostError {
    HostError::new(
        "upload-collection-missing",
        format!(
            "the upload collection {id} does not exist on site {}: set [features.tenant-attach] \
             upload to \"all\" or to an existing collection id",
            host.site().code
        ),
    )
}

/// The tenant attach plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantAttach;

cloudattach_sdk::register_plugin!(TenantAttach);

impl Plugin for TenantAttach {
    fn serve_action(
        &self,
        host: &dyn Host,
        _options: &Options,
        call: &ActionCall,
    ) -> Result<cloudattach_sdk::ActionResult, ActionError> {
        match (call.action.as_str(), &call.subject) {
            (actions::RESOURCE_EXPLORER, ActionSubject::Device(id)) => {
                resource_explorer_document(host, *id)
                    .map(|document| cloudattach_sdk::ActionResult::Document { document })
            }
            (actions::TIMELINE, ActionSubject::Device(id)) => {
                let hours = match call.parameters.get("hours") {
                    None => TIMELINE_DEFAULT_HOURS,
                    Some(v) => v.as_i64().unwrap_or(0),
                };
                timeline_table(host, *id, hours, time::OffsetDateTime::now_utc())
            }
            (actions::CMPIVOT, ActionSubject::Device(_))
            | (CMPIVOT_COLLECTION, ActionSubject::Collection(_)) => run_query(host, call),
            (other, subject) => Err(ActionError::new(
                "action-not-served",
                format!("tenant-attach serves no action \"{other}\" for {subject:?}"),
            )),
        }
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            ID,
            "Tenant attach (device upload)",
            env!("CARGO_PKG_VERSION"),
        )
        .description(
            "Uploads the site's client devices (all, or one collection and its \
                 subcollections) to the tenant, then delta uploads",
        )
        .environments(&[Environment::Public, Environment::Usgov])
        .min_site_version(SiteVersion(2002))
        .min_site_version_in(Environment::Usgov, SiteVersion(2107))
        .in_default_settings()
        .option(OptionSpec::choice_or_collection(
            "upload",
            &["all"],
            Some("all"),
            "The devices to upload: \"all\" devices with a client, or a collection id \
                 (the collection and its subcollections)",
        ))
        .action(resource_explorer())
        .action(cmpivot())
        .action(cmpivot_collection())
        .action(timeline())
    }

    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport {
        let mut report = CheckReport::default();
        let site = host.site();
        match site.service_connection_point {
            ConnectionPoint::Online => {
                report.push(Finding::info(
                    "service-connection-point",
                    "the service connection point is online",
                ));
            }
            ConnectionPoint::Offline => {
                report.push(Finding::error(
                    "service-connection-point-offline",
                    format!(
                        "the service connection point of site {} is offline: tenant attach needs it \
                         online to reach the cloud",
                        site.code
                    ),
                ));
            }
            ConnectionPoint::None => {
                report.push(Finding::error(
                    "service-connection-point-missing",
                    format!(
                        "site {} has no service connection point: install one at the top-tier site, \
                         in online mode",
                        site.code
                    ),
                ));
            }
        }
        if !site.administration_service {
            report.push(Finding::error(
                "administration-service-missing",
                format!(
                    "the administration service (SMS Provider REST API) of site {} does not work: \
                     tenant attach needs it",
                    site.code
                ),
            ));
        }
        if !site.entra_user_discovery && !site.ad_user_discovery {
            report.push(Finding::warning(
                "no-user-discovery",
                "neither Entra ID user discovery nor Active Directory user discovery is enabled: \
                 users who act on devices from the cloud must be discovered hybrid identities",
            ));
        }

        let scope = UploadScope::from_options(options);
        let collection = match scope.resolve(host) {
            Ok(c) => c,
            Err(id) => {
                report.push(Finding::error(
                    "upload-collection-missing",
                    missing_collection(host, &id).message,
                ));
                None
            }
        };
        let counts = match ScopeCounts::collect(host) {
            Ok(c) => c,
            Err(e) => {
                report.push(Finding::error("inventory-unavailable", e.message));
                return report;
            }
        };
        report
            .data
            .insert("upload".into(), scope.as_setting().into());
        report
            .data
            .insert("devices_total".into(), counts.total.into());
        report
            .data
            .insert("devices_with_client".into(), counts.with_client.into());
        report
            .data
            .insert("devices_in_scope".into(), counts.in_scope.into());
        let scope_text = match &collection {
            None if scope == UploadScope::All => "all devices with a client".to_string(),
            None => format!("collection {}", scope.as_setting()),
            Some(c) => format!("collection {} \"{}\" and its subcollections", c.id, c.name),
        };
        report.push(Finding::info(
            "devices-in-scope",
            format!(
                "{} client devices in scope ({scope_text}) of {} devices on the site",
                thousands(counts.in_scope),
                thousands(counts.total)
            ),
        ));
        if counts.in_scope == 0 {
            report.push(Finding::warning(
                "no-devices-in-scope",
                format!("no client device is in the upload scope ({scope_text}): nothing would be uploaded"),
            ));
        }
        report
    }

    fn settings(&self, options: &Options) -> Value {
        json!({ "upload": UploadScope::from_options(options).as_setting() })
    }

    fn plan(&self, host: &dyn Host, options: &Options, applied: Option<&Value>) -> PlanDecision {
        let wanted = self.settings(options);
        let decision = PlanDecision::new(settings_action(&wanted, applied));
        match ScopeCounts::collect(host) {
            Ok(c) => decision.with_detail(format!("upload {} devices", thousands(c.in_scope))),
            Err(_) => decision,
        }
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        enable_and_upload(self, host, options, "devices_uploaded", &|stats| {
            format!(
                "{} devices in the tenant ({} records sent: {} added or changed, {} removed)",
                thousands(stats.total),
                thousands(stats.sent),
                thousands(stats.upserted),
                thousands(stats.deleted)
            )
        })
    }

    fn sync(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        // Syncing a scope that does not exist would delete every uploaded device.
        if let Err(id) = UploadScope::from_options(options).resolve(host) {
            return Err(missing_collection(host, &id));
        }
        let stats = stream(host, mode, |d| {
            host.is_uploaded(d).then(|| device_record(d))
        })?;
        host.log(&format!(
            "devices: {} records sent ({} devices in the tenant)",
            thousands(stats.sent),
            thousands(stats.total)
        ));
        Ok(Some(stats))
    }
}

/// Streams the records `produce` makes from the site's devices into the channel, so memory
/// stays flat however large the site is.
fn stream(
    host: &dyn Host,
    mode: SyncMode,
    mut produce: impl FnMut(&Device) -> Option<Record>,
) -> Result<SyncStats, HostError> {
    upload_from_devices(host, CHANNEL, mode, DeviceParts::NONE, &mut produce)
}

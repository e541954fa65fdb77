//! # collection-summary: a cloudattach plugin from a third party
//!
//! A cloud feature cloudattach does not ship, built on `cloudattach-sdk` alone and loaded at
//! run time from a plugin directory: for every collection of the site, how many devices it
//! has (with a client, and uploaded by tenant attach) and their OS mix, uploaded to the
//! tenant's extension channel [`CHANNEL`] and readable through the cloud's API at
//! `GET /api/v1/hierarchies/{hierarchy id}/ext/collection-summary/records`.
//!
//! It also shows a feature built on inventory cloudattach does not model: an export that carries
//! a `bitlocker` block per device (`{"bitlocker": {"recovery_key_escrowed": true, …}}`) keeps it
//! as the device's extension data ([`Device::extension_at`]), and each summary counts the
//! devices that report BitLocker and those whose recovery key is escrowed ([`bitlocker_state`]).
//!
//! It serves a cloud action as well: [`REPORT_ACTION`] (`collection-report`), asked in the cloud
//! console on one collection, answers with that collection's OS mix computed from the site at
//! the time of asking — one row per OS family with its devices, clients and uploaded devices
//! ([`collection_report`]) — never from what was uploaded.
//!
//! The plugin never does I/O itself: the site, the upload and the cloud all come through
//! [`Host`], so the same code runs linked into a binary, loaded as a library, or against the
//! SDK's in-memory test host.

use cloudattach_sdk::gateway::ExtRecords;
use cloudattach_sdk::{
    ActionCall, ActionDecl, ActionError, ActionParameter, ActionResult, ActionSubject,
    ActionTarget, ApplyOutcome, CheckReport, CollectionInfo, ConnectionPoint, Device, DeviceParts,
    Environment, Finding, Host, HostError, Manifest, Method, OptionSpec, Options, OptionsExt,
    ParameterKind, PlanAction, PlanDecision, Plugin, Record, StatusReport, SyncMode, SyncStats,
    ValidateContext, actions, feature_status, put_feature, thousands,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The plugin id: the `[features.collection-summary]` table and the cloud's feature id.
pub const ID: &str = "collection-summary";

/// The upload channel: the tenant's extension channel for this feature.
pub const CHANNEL: &str = "ext/collection-summary";

/// The label for the OS names beyond `max_os_entries`.
pub const OTHER_OS: &str = "Other";

/// The cloud action this feature declares: a collection's report, computed from the site when
/// asked.
pub const REPORT_ACTION: &str = "collection-report";

/// The columns of [`REPORT_ACTION`]'s table, one row per OS family.
pub const REPORT_COLUMNS: [&str; 4] = ["os", "devices", "clients", "uploaded"];

/// The declaration of [`REPORT_ACTION`]: on a collection, optional parameter `top` (the OS
/// families listed before the rest count as [`OTHER_OS`]; the feature's `max_os_entries` when
/// absent), site permission Read, Intune permission "view client details".
pub fn report_action() -> ActionDecl {
    ActionDecl::new(
        REPORT_ACTION,
        "Collection report",
        ActionTarget::Collection,
        &[actions::SITE_READ],
        &[actions::INTUNE_VIEW_CLIENT_DETAILS],
    )
    .parameter(ActionParameter::new(
        "top",
        ParameterKind::Integer,
        false,
        "OS families listed (1 to 50) before the rest count as \"Other\"; max_os_entries by default",
    ))
    .timeout_secs(120)
}

/// One row of a collection's report: an OS family and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// The OS family ([`os_family`]) or [`OTHER_OS`].
    pub os: String,
    /// Devices in the collection's effective membership with this OS.
    pub devices: u64,
    /// Of those, devices with a client.
    pub clients: u64,
    /// Of those, devices tenant attach uploads.
    pub uploaded: u64,
}

/// The report of one collection, read from the site now in one pass: one row per OS family,
/// the most devices first (ties by name); when there are more than `top` families, the first
/// `top - 1` and one [`OTHER_OS`] row with the rest (as the summary's OS mix folds them).
/// `None` when the site has no such collection.
pub fn collection_report(
    host: &dyn Host,
    collection_id: &str,
    top: usize,
) -> Result<Option<Vec<ReportRow>>, HostError> {
    if host.collection(collection_id).is_none() {
        return Ok(None);
    }
    let mut by_os: BTreeMap<String, ReportRow> = BTreeMap::new();
    host.for_each_device_with(DeviceParts::NONE, &mut |d| {
        if !host.is_member(collection_id, d.resource_id) {
            return;
        }
        let family = os_family(d);
        let row = by_os.entry(family.clone()).or_insert_with(|| ReportRow {
            os: family,
            devices: 0,
            clients: 0,
            uploaded: 0,
        });
        row.devices += 1;
        row.clients += u64::from(d.client);
        row.uploaded += u64::from(host.is_uploaded(d));
    })?;
    let mut rows: Vec<ReportRow> = by_os.into_values().collect();
    rows.sort_by(|a, b| b.devices.cmp(&a.devices).then_with(|| a.os.cmp(&b.os)));
    let top = top.max(1);
    if rows.len() > top {
        let keep = top.saturating_sub(1).max(1);
        let mut other = ReportRow {
            os: OTHER_OS.into(),
            devices: 0,
            clients: 0,
            uploaded: 0,
        };
        for r in rows.drain(keep..) {
            other.devices += r.devices;
            other.clients += r.clients;
            other.uploaded += r.uploaded;
        }
        rows.push(other);
    }
    Ok(Some(rows))
}

/// One collection's summary: the record uploaded for it (keyed by collection id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Collection id.
    pub collection_id: String,
    /// Collection name.
    pub name: String,
    /// Devices in its effective membership.
    pub devices: u64,
    /// Of those, devices with a client.
    pub clients: u64,
    /// Of those, devices tenant attach uploads.
    pub uploaded: u64,
    /// Devices per OS family.
    pub os: BTreeMap<String, u64>,
    /// Devices whose inventory line reports BitLocker (a `bitlocker` block).
    pub bitlocker_reported: u64,
    /// Of those, devices whose BitLocker recovery key is escrowed.
    pub recovery_keys_escrowed: u64,
}

/// What a device's inventory says of BitLocker, from its extension data (cloudattach does not
/// model BitLocker): `None` when the line carries no `bitlocker` block, else whether its
/// `recovery_key_escrowed` is `true`.
pub fn bitlocker_state(d: &Device) -> Option<bool> {
    d.extension_at("/bitlocker")?;
    Some(
        d.extension_at("/bitlocker/recovery_key_escrowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    )
}

impl Summary {
    fn new(c: &CollectionInfo) -> Self {
        Summary {
            collection_id: c.id.clone(),
            name: c.name.clone(),
            devices: 0,
            clients: 0,
            uploaded: 0,
            os: BTreeMap::new(),
            bitlocker_reported: 0,
            recovery_keys_escrowed: 0,
        }
    }

    /// The record the cloud stores.
    pub fn record(&self) -> Record {
        Record {
            key: self.collection_id.clone(),
            value: json!({
                "collection_id": self.collection_id,
                "name": self.name,
                "devices": self.devices,
                "clients": self.clients,
                "uploaded": self.uploaded,
                "os": self.os,
                "bitlocker": {
                    "reported": self.bitlocker_reported,
                    "recovery_key_escrowed": self.recovery_keys_escrowed,
                },
            }),
        }
    }

    /// Keeps the `max` most common OS families (ties by name) and folds the rest into
    /// [`OTHER_OS`].
    fn cap_os(&mut self, max: usize) {
        if self.os.len() <= max {
            return;
        }
        let mut by_count: Vec<(String, u64)> = std::mem::take(&mut self.os).into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let keep = max.saturating_sub(1).max(1);
        let other: u64 = by_count[keep..].iter().map(|(_, n)| n).sum();
        self.os = by_count.into_iter().take(keep).collect();
        *self.os.entry(OTHER_OS.to_string()).or_default() += other;
    }
}

/// The OS family a device counts under: "Windows 11", "Windows 10", "Windows Server", or the
/// OS caption as inventoried.
pub fn os_family(d: &Device) -> String {
    if d.is_server() {
        "Windows Server".into()
    } else if d.is_windows_11() {
        "Windows 11".into()
    } else if d.is_windows_client_os() {
        "Windows 10".into()
    } else if d.os.trim().is_empty() {
        "Unknown".into()
    } else {
        d.os.clone()
    }
}

/// The feature's options, read from its resolved `[features.collection-summary]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryOptions {
    /// Also report collections with no members.
    pub include_empty: bool,
    /// OS families listed per collection before the rest count as "Other".
    pub max_os_entries: u64,
}

impl SummaryOptions {
    /// From resolved options (the manifest's defaults fill in what is absent).
    pub fn from_options(o: &Options) -> Self {
        SummaryOptions {
            include_empty: o.flag("include_empty"),
            max_os_entries: o.integer("max_os_entries").unwrap_or(5),
        }
    }
}

/// Summarizes every collection in one pass over the inventory, sorted by collection id.
pub fn summarize(host: &dyn Host, options: &SummaryOptions) -> Result<Vec<Summary>, HostError> {
    let mut summaries: Vec<Summary> = host.collections().iter().map(Summary::new).collect();
    host.for_each_device(&mut |d| {
        let family = os_family(d);
        let uploaded = host.is_uploaded(d);
        let bitlocker = bitlocker_state(d);
        for s in summaries
            .iter_mut()
            .filter(|s| host.is_member(&s.collection_id, d.resource_id))
        {
            s.devices += 1;
            s.clients += u64::from(d.client);
            s.uploaded += u64::from(uploaded);
            *s.os.entry(family.clone()).or_default() += 1;
            s.bitlocker_reported += u64::from(bitlocker.is_some());
            s.recovery_keys_escrowed += u64::from(bitlocker == Some(true));
        }
    })?;
    if !options.include_empty {
        summaries.retain(|s| s.devices > 0);
    }
    for s in &mut summaries {
        s.cap_os(options.max_os_entries.max(1) as usize);
    }
    summaries.sort_by(|a, b| a.collection_id.cmp(&b.collection_id));
    Ok(summaries)
}

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct CollectionSummary;

// Loaded at run time: `cloudattach --plugin-dir DIR` finds this library's root module.
cloudattach_sdk::export_plugin!(CollectionSummary);

impl CollectionSummary {
    fn upload(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<SyncStats, HostError> {
        let summaries = summarize(host, &SummaryOptions::from_options(options))?;
        let mut sink = host.open_sync(CHANNEL, mode)?;
        for s in &summaries {
            sink.push(s.record())?;
        }
        sink.finish()
    }
}

impl Plugin for CollectionSummary {
    fn manifest(&self) -> Manifest {
        Manifest::new(ID, "Collection summary", env!("CARGO_PKG_VERSION"))
            .description(
                "Uploads per-collection device counts and OS mix to the tenant's extension channel",
            )
            .depends_on(&["tenant-attach"])
            // Device data cannot be uploaded to Azure China Cloud, so neither can summaries of it.
            .environments(&[Environment::Public, Environment::Usgov])
            .option(OptionSpec::boolean(
                "include_empty",
                false,
                "Also report collections with no members",
            ))
            .option(OptionSpec::integer(
                "max_os_entries",
                5,
                "OS families listed per collection; the others are counted as \"Other\"",
            ))
            .action(report_action())
    }

    fn validate(&self, options: &Options, _ctx: &ValidateContext) -> Vec<Finding> {
        let o = SummaryOptions::from_options(options);
        if o.max_os_entries == 0 || o.max_os_entries > 50 {
            return vec![Finding::error(
                "max-os-entries",
                format!(
                    "max_os_entries = {}: use a number from 1 to 50",
                    o.max_os_entries
                ),
            )];
        }
        vec![]
    }

    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport {
        let mut report = CheckReport::default();
        let site = host.site();
        if site.service_connection_point != ConnectionPoint::Online {
            report.push(Finding::error(
                "service-connection-point",
                format!(
                    "the service connection point of site {} is not online: collection summaries are uploaded through it",
                    site.code
                ),
            ));
        }
        if !site.administration_service {
            report.push(Finding::error(
                "administration-service",
                format!("the administration service of site {} does not work: collection membership is read through it", site.code),
            ));
        }
        match summarize(host, &SummaryOptions::from_options(options)) {
            Ok(summaries) => {
                if summaries.iter().all(|s| s.collection_id == "SMS00001") {
                    report.push(Finding::warning(
                        "no-collections",
                        "the site has no collections with members besides All Systems: the summary holds one entry",
                    ));
                }
                let uploaded: u64 = summaries
                    .iter()
                    .find(|s| s.collection_id == "SMS00001")
                    .map_or(0, |s| s.uploaded);
                report.push(Finding::info(
                    "collections",
                    format!(
                        "{} collections to summarize; {} devices uploaded",
                        summaries.len(),
                        thousands(uploaded)
                    ),
                ));
                report
                    .data
                    .insert("collections".into(), Value::from(summaries.len()));
            }
            Err(e) => {
                report.push(Finding::error("inventory", e.message));
            }
        }
        report
    }

    fn plan(&self, host: &dyn Host, options: &Options, applied: Option<&Value>) -> PlanDecision {
        let wanted = self.settings(options);
        let action = match applied {
            None => PlanAction::Enable,
            Some(prev) if *prev == wanted => PlanAction::Noop,
            Some(_) => PlanAction::Update,
        };
        let collections = summarize(host, &SummaryOptions::from_options(options))
            .map(|s| s.len())
            .unwrap_or(0);
        PlanDecision::new(action).with_detail(format!(
            "upload summaries of {collections} collections to {CHANNEL}"
        ))
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        if let Err(e) = put_feature(host, ID, &self.settings(options)) {
            return ApplyOutcome::failed(e.code, e.message);
        }
        let mut outcome = ApplyOutcome::ok();
        outcome.findings.push(Finding::info(
            "enabled",
            "collection summary enabled in the tenant",
        ));
        match self.upload(host, options, SyncMode::Delta) {
            Ok(stats) => {
                outcome.findings.push(Finding::info(
                    "uploaded",
                    format!(
                        "uploaded summaries of {} collections ({} changed)",
                        stats.total, stats.sent
                    ),
                ));
                outcome.count("collections_uploaded", stats.total)
            }
            Err(e) => {
                // The feature is on; the next `sync` retries the upload.
                outcome.ok = false;
                outcome.findings.push(Finding::error(
                    e.code,
                    format!("the upload failed: {}", e.message),
                ));
                outcome
            }
        }
    }

    fn sync(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        self.upload(host, options, mode).map(Some)
    }

    fn serve_action(
        &self,
        host: &dyn Host,
        options: &Options,
        call: &ActionCall,
    ) -> Result<ActionResult, ActionError> {
        let collection = match (call.action.as_str(), &call.subject) {
            (REPORT_ACTION, ActionSubject::Collection(c)) => c,
            _ => {
                return Err(ActionError::new(
                    "action-not-served",
                    format!(
                        "{ID} serves \"{REPORT_ACTION}\" on a collection, not \"{}\" on {:?}",
                        call.action, call.subject
                    ),
                ));
            }
        };
        let top = match call.parameters.get("top").and_then(Value::as_u64) {
            None if call.parameters.contains_key("top") => 0,
            None => SummaryOptions::from_options(options).max_os_entries,
            Some(n) => n,
        };
        if !(1..=50).contains(&top) {
            return Err(ActionError::new(
                "bad-top",
                "the parameter \"top\" must be a number from 1 to 50",
            ));
        }
        let rows = collection_report(host, collection, top as usize)
            .map_err(|e| ActionError::new(e.code, e.message))?
            .ok_or_else(|| {
                ActionError::new(
                    "collection-not-found",
                    format!("site {} has no collection {collection}", host.site().code),
                )
            })?;
        Ok(ActionResult::Table {
            columns: REPORT_COLUMNS.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .into_iter()
                .map(|r| {
                    vec![
                        Value::from(r.os),
                        Value::from(r.devices),
                        Value::from(r.clients),
                        Value::from(r.uploaded),
                    ]
                })
                .collect(),
            truncated: false,
        })
    }

    fn status(&self, host: &dyn Host) -> Result<StatusReport, HostError> {
        let mut report = feature_status(host, ID)?;
        // What the cloud holds, not what was sent.
        let records = host.cloud(Method::Get, &format!("ext/{ID}/records"), None)?;
        let count = serde_json::from_value::<ExtRecords>(records)
            .map(|r| r.count)
            .unwrap_or(0);
        report
            .counts
            .insert("collections_reported".into(), Value::from(count));
        Ok(report)
    }
}

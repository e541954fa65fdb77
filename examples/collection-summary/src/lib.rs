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
//! The plugin never does I/O itself: the site, the upload and the cloud all come through
//! [`Host`], so the same code runs linked into a binary, loaded as a library, or against the
//! SDK's in-memory test host.

use cloudattach_sdk::gateway::ExtRecords;
use cloudattach_sdk::{
    ApplyOutcome, CheckReport, CollectionInfo, ConnectionPoint, Device, Environment, Finding, Host,
    HostError, Manifest, Method, OptionSpec, Options, OptionsExt, PlanAction, PlanDecision, Plugin,
    Record, StatusReport, SyncMode, SyncStats, ValidateContext, feature_status, put_feature,
    thousands,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The plugin id: the `[features.collection-summary]` table and the cloud's feature id.
pub const ID: &str = "collection-summary";

/// The upload channel: the tenant's extension channel for this feature.
pub const CHANNEL: &str = "ext/collection-summary";

/// The label for the OS names beyond `max_os_entries`.
pub const OTHER_OS: &str = "Other";

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

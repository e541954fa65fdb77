//! The `defender-reporting` plugin: uploads the Microsoft Defender antivirus state and
//! detections of uploaded devices, which feed the tenant's antivirus reports — Unhealthy
//! endpoints, Active malware, Antivirus agent status and Detected malware.

use cloudattach_sdk::{
    ApplyOutcome, CheckReport, Device, DeviceParts, Environment, Explanation, Finding, Host,
    HostError, Manifest, Options, PlanDecision, Plugin, Record, SiteVersion, SyncMode, SyncStats,
    enable_and_upload, settings_action, thousands, upload_from_devices,
};
use serde_json::{Value, json};

/// The plugin id.
pub const ID: &str = "defender-reporting";

/// The upload channel of Defender records.
pub const CHANNEL: &str = "defender";

/// The record the `defender` channel carries — `{"resource_id", "defender"}` — for a device
/// with a `defender` block; `None` for a device without one.
pub fn defender_record(device: &Device) -> Option<Record> {
    let defender = device.defender.as_ref()?;
    Some(Record {
        key: device.resource_id.to_string(),
        value: json!({ "resource_id": device.resource_id, "defender": defender }),
    })
}

/// Counts of the uploaded devices' Defender data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefenderCounts {
    /// Devices tenant attach uploads.
    pub uploaded: u64,
    /// Uploaded devices with a `defender` block: what this feature reports.
    pub with_defender: u64,
    /// Of those, devices with at least one detection whose status is `active`.
    pub with_active_malware: u64,
}

impl DefenderCounts {
    /// Counts the site's devices.
    pub fn collect(host: &dyn Host) -> Result<Self, HostError> {
        let mut counts = DefenderCounts::default();
        host.for_each_device(&mut |d| {
            if !host.is_uploaded(d) {
                return;
            }
            counts.uploaded += 1;
            if let Some(defender) = &d.defender {
                counts.with_defender += 1;
                let active = defender
                    .detections
                    .iter()
                    .any(|x| x.current_status == "active");
                counts.with_active_malware += u64::from(active);
            }
        })?;
        Ok(counts)
    }
}

/// The Defender reporting plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefenderReporting;

cloudattach_sdk::register_plugin!(DefenderReporting);

impl Plugin for DefenderReporting {
    fn manifest(&self) -> Manifest {
        Manifest::new(
            ID,
            "Microsoft Defender reporting",
            env!("CARGO_PKG_VERSION"),
        )
        .description(
            "Uploads Microsoft Defender antivirus state and detections of uploaded devices \
                 for the tenant's antivirus reports",
        )
        .depends_on(&["tenant-attach"])
        .environments(&[Environment::Public, Environment::Usgov])
        .min_site_version(SiteVersion(2303))
        .in_default_settings()
    }

    fn check(&self, host: &dyn Host, _options: &Options) -> CheckReport {
        let mut report = CheckReport::default();
        let counts = match DefenderCounts::collect(host) {
            Ok(c) => c,
            Err(e) => {
                report.push(Finding::error("inventory-unavailable", e.message));
                return report;
            }
        };
        report
            .data
            .insert("uploaded_devices".into(), counts.uploaded.into());
        report
            .data
            .insert("devices_with_defender".into(), counts.with_defender.into());
        report.data.insert(
            "devices_with_active_malware".into(),
            counts.with_active_malware.into(),
        );
        report.push(Finding::info(
            "devices-with-defender",
            format!(
                "{} of {} uploaded devices carry Microsoft Defender data ({} with active malware)",
                thousands(counts.with_defender),
                thousands(counts.uploaded),
                thousands(counts.with_active_malware)
            ),
        ));
        if counts.with_defender == 0 {
            report.push(Finding::warning(
                "no-defender-data",
                "no uploaded device carries Microsoft Defender data: the antivirus reports will \
                 stay empty until clients report Endpoint Protection state",
            ));
        }
        report
    }

    fn settings(&self, _options: &Options) -> Value {
        json!({})
    }

    fn plan(&self, host: &dyn Host, options: &Options, applied: Option<&Value>) -> PlanDecision {
        let wanted = self.settings(options);
        let decision = PlanDecision::new(settings_action(&wanted, applied));
        match DefenderCounts::collect(host) {
            Ok(c) => decision.with_detail(format!(
                "report Defender state of {} devices",
                thousands(c.with_defender)
            )),
            Err(_) => decision,
        }
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        enable_and_upload(self, host, options, "devices_reported", &|stats| {
            format!(
                "Defender state of {} devices reported ({} records sent)",
                thousands(stats.total),
                thousands(stats.sent)
            )
        })
    }

    fn sync(
        &self,
        host: &dyn Host,
        _options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        stream(host, mode, |d| {
            if host.is_uploaded(d) {
                defender_record(d)
            } else {
                None
            }
        })
        .map(Some)
    }

    fn explain_device(
        &self,
        host: &dyn Host,
        _options: &Options,
        enabled: bool,
        device: &Device,
    ) -> Option<Explanation> {
        let uploaded = host.is_uploaded(device);
        let has_block = device.defender.is_some();
        let reason = match (uploaded, has_block, enabled) {
            (false, _, _) => {
                "tenant attach does not upload the device, so its Defender data stays on the site"
            }
            (true, false, _) => {
                "the site holds no Defender data for it (no Microsoft Defender antivirus state in \
                 its inventory)"
            }
            (true, true, false) => {
                "an uploaded device with Defender data, but Defender reporting is not enabled"
            }
            (true, true, true) => "an uploaded device with Defender data: its state goes up",
        };
        Some(Explanation::new(
            "defender",
            json!({
                "uploaded": uploaded && has_block && enabled,
                "reason": reason,
                "detections": device.defender.as_ref().map_or(0, |d| d.detections.len()),
            }),
        ))
    }
}

/// Streams the records `produce` makes from the site's devices into the channel, so memory
/// stays flat however large the site is.
fn stream(
    host: &dyn Host,
    mode: SyncMode,
    mut produce: impl FnMut(&Device) -> Option<Record>,
) -> Result<SyncStats, HostError> {
    upload_from_devices(host, CHANNEL, mode, DeviceParts::DEFENDER, &mut produce)
}

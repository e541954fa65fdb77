//! The `endpoint-analytics` plugin: enrolls uploaded devices in Endpoint analytics and uploads
//! their startup and app-reliability telemetry; the tenant computes the scores.
//!
//! A device is eligible when tenant attach uploads it, it runs Windows 10 or 11 (no insights for
//! Windows Server) and its client is 5.00.8968 (2002) or later; app reliability data needs
//! client 5.00.9012 (2006) or later.

use cloudattach_sdk::version::client;
use cloudattach_sdk::{
    Analytics, ApplyOutcome, CheckReport, Device, DeviceParts, Environment, Explanation, Finding,
    Host, HostError, Manifest, Options, PlanDecision, Plugin, Record, SiteVersion, SyncMode,
    SyncStats, enable_and_upload, settings_action, thousands, upload_from_devices,
};
use serde_json::{Value, json};

/// The plugin id.
pub const ID: &str = "endpoint-analytics";

/// The upload channel of enrollment and telemetry records.
pub const CHANNEL: &str = "analytics";

/// The number of reporting devices the tenant needs before it computes scores; below it the
/// tenant reports "insufficient data".
pub const MIN_REPORTING_DEVICES: u64 = 5;

/// Why a device is not eligible for Endpoint analytics, in the order the rules are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusion {
    /// Tenant attach does not upload it (no client, or outside the upload collection).
    NotUploaded,
    /// A server OS: Endpoint analytics gives no insights for Windows Server.
    ServerOs,
    /// Not Windows 10 or 11.
    OtherOs,
    /// Client older than 5.00.8968 (2002), or an unreadable client version.
    ClientTooOld,
}

impl Exclusion {
    /// Every reason, in the order the rules are tried.
    pub const ALL: [Exclusion; 4] = [
        Exclusion::NotUploaded,
        Exclusion::ServerOs,
        Exclusion::OtherOs,
        Exclusion::ClientTooOld,
    ];

    /// What the reason means, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Exclusion::NotUploaded => {
                "tenant attach does not upload it (no client, or outside the upload collection)"
            }
            Exclusion::ServerOs => {
                "a server OS: Endpoint analytics gives no insights for Windows Server"
            }
            Exclusion::OtherOs => "not Windows 10 or 11",
            Exclusion::ClientTooOld => {
                "the client is older than 5.00.8968 (2002) or its version is unreadable: upgrade the client"
            }
        }
    }

    /// The key in the check's `excluded` breakdown.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::NotUploaded => "not_uploaded",
            Exclusion::ServerOs => "server_os",
            Exclusion::OtherOs => "other_os",
            Exclusion::ClientTooOld => "client_too_old",
        }
    }
}

/// Why `device` is not eligible, or `None` when it is; `uploaded` is [`Host::is_uploaded`].
pub fn exclusion(device: &Device, uploaded: bool) -> Option<Exclusion> {
    if !uploaded {
        Some(Exclusion::NotUploaded)
    } else if device.is_server() {
        Some(Exclusion::ServerOs)
    } else if !device.is_windows_client_os() {
        Some(Exclusion::OtherOs)
    } else if !device.client_at_least(client::ENDPOINT_ANALYTICS) {
        Some(Exclusion::ClientTooOld)
    } else {
        None
    }
}

/// Whether the device is eligible for Endpoint analytics on this host.
pub fn is_eligible(host: &dyn Host, device: &Device) -> bool {
    exclusion(device, host.is_uploaded(device)).is_none()
}

/// Whether the device's client can report app reliability data (5.00.9012 or later).
pub fn reports_app_reliability(device: &Device) -> bool {
    device.client_at_least(client::APP_RELIABILITY)
}

/// The record the `analytics` channel carries for an eligible device:
/// `{"resource_id", "client_version", "analytics"}`.
///
/// Every eligible device is sent, with `"analytics": null` when it has not reported telemetry
/// yet: enrollment is per device, and the tenant counts it as enrolled while its data is still
/// on the way (devices report every 24 hours). A client older than 5.00.9012 cannot collect app
/// reliability data, so any `apps` it carries are dropped rather than fed into the tenant's
/// app reliability scores.
pub fn analytics_record(device: &Device) -> Record {
    let analytics: Option<Analytics> = device.analytics.clone().map(|mut a| {
        if !reports_app_reliability(device) {
            a.apps.clear();
        }
        a
    });
    Record {
        key: device.resource_id.to_string(),
        value: json!({
            "resource_id": device.resource_id,
            "client_version": device.client_version,
            "analytics": analytics,
        }),
    }
}

/// Counts of the site's devices against Endpoint analytics eligibility.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EligibilityCounts {
    /// Eligible devices.
    pub eligible: u64,
    /// Eligible devices whose client reports app reliability data.
    pub app_reliability: u64,
    /// Eligible devices that carry telemetry now.
    pub with_telemetry: u64,
    /// Devices excluded, per [`Exclusion::ALL`] index.
    excluded: [u64; 4],
}

impl EligibilityCounts {
    /// Counts the site's devices.
    pub fn collect(host: &dyn Host) -> Result<Self, HostError> {
        let mut counts = EligibilityCounts::default();
        host.for_each_device(&mut |d| match exclusion(d, host.is_uploaded(d)) {
            Some(reason) => counts.excluded[reason as usize] += 1,
            None => {
                counts.eligible += 1;
                counts.app_reliability += u64::from(reports_app_reliability(d));
                counts.with_telemetry += u64::from(d.analytics.is_some());
            }
        })?;
        Ok(counts)
    }

    /// Devices excluded for one reason.
    pub fn excluded(&self, reason: Exclusion) -> u64 {
        self.excluded[reason as usize]
    }

    /// `{"not_uploaded": n, "server_os": n, "other_os": n, "client_too_old": n}`.
    pub fn excluded_json(&self) -> Value {
        Value::Object(
            Exclusion::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), Value::from(self.excluded(*r))))
                .collect(),
        )
    }
}

/// The Endpoint analytics plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointAnalytics;

cloudattach_sdk::register_plugin!(EndpointAnalytics);

impl Plugin for EndpointAnalytics {
    fn manifest(&self) -> Manifest {
        Manifest::new(ID, "Endpoint analytics", env!("CARGO_PKG_VERSION"))
            .description(
                "Enrolls uploaded devices in Endpoint analytics and uploads their startup and \
                 app reliability telemetry; the tenant computes the scores",
            )
            .depends_on(&["tenant-attach"])
            .environments(&[Environment::Public, Environment::Usgov])
            .min_site_version(SiteVersion(2002))
            .in_default_settings()
    }

    fn check(&self, host: &dyn Host, _options: &Options) -> CheckReport {
        let mut report = CheckReport::default();
        let counts = match EligibilityCounts::collect(host) {
            Ok(c) => c,
            Err(e) => {
                report.push(Finding::error("inventory-unavailable", e.message));
                return report;
            }
        };
        report
            .data
            .insert("eligible_devices".into(), counts.eligible.into());
        report.data.insert(
            "app_reliability_devices".into(),
            counts.app_reliability.into(),
        );
        report.data.insert(
            "devices_with_telemetry".into(),
            counts.with_telemetry.into(),
        );
        report
            .data
            .insert("excluded".into(), counts.excluded_json());
        report.push(Finding::info(
            "eligible-devices",
            format!(
                "{} uploaded Windows 10/11 devices with client 5.00.8968 or later are eligible; \
                 {} of them report app reliability data (client 5.00.9012 or later)",
                thousands(counts.eligible),
                thousands(counts.app_reliability)
            ),
        ));
        let servers = counts.excluded(Exclusion::ServerOs);
        if servers > 0 {
            report.push(Finding::info(
                "servers-excluded",
                format!(
                    "{} uploaded servers are left out: Endpoint analytics gives no insights for Windows Server",
                    thousands(servers)
                ),
            ));
        }
        let old_clients = counts.excluded(Exclusion::ClientTooOld);
        if old_clients > 0 {
            report.push(Finding::info(
                "clients-too-old",
                format!(
                    "{} uploaded Windows 10/11 devices have a client older than 5.00.8968 (2002): \
                     update the client to include them",
                    thousands(old_clients)
                ),
            ));
        }
        if counts.eligible < MIN_REPORTING_DEVICES {
            report.push(Finding::warning(
                "insufficient-data",
                format!(
                    "only {} eligible devices: scores need at least {MIN_REPORTING_DEVICES} \
                     reporting devices, so the tenant will show \"insufficient data\"",
                    thousands(counts.eligible)
                ),
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
        match EligibilityCounts::collect(host) {
            Ok(c) => decision.with_detail(format!(
                "enroll {} devices in Endpoint analytics",
                thousands(c.eligible)
            )),
            Err(_) => decision,
        }
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        enable_and_upload(self, host, options, "devices_enrolled", &|stats| {
            format!(
                "{} devices enrolled in Endpoint analytics ({} records sent)",
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
            is_eligible(host, d).then(|| analytics_record(d))
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
        let exclusion = exclusion(device, host.is_uploaded(device));
        let reason = match exclusion {
            Some(e) => e.describe().to_string(),
            None if enabled => format!(
                "an uploaded Windows 10/11 client with client {}: enrolled{}",
                device.client_version.as_deref().unwrap_or("?"),
                if reports_app_reliability(device) {
                    ", with app reliability data"
                } else {
                    "; the client is older than 5.00.9012 (2006), so no app reliability data"
                }
            ),
            None => "meets every rule, but Endpoint analytics is not enabled".to_string(),
        };
        Some(Explanation::new(
            "endpoint_analytics",
            json!({
                "eligible": exclusion.is_none(),
                "enrolled": enabled && exclusion.is_none(),
                "reason": reason,
                "reporting": device.analytics.is_some(),
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
    upload_from_devices(host, CHANNEL, mode, DeviceParts::ANALYTICS, &mut produce)
}

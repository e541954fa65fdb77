//! The `co-management` plugin: enrolls eligible devices into cloud management (Intune)
//! automatically — all of them, a pilot collection, or none — while every workload stays with
//! the site.
//!
//! Co-management does not need tenant attach: eligibility is decided over every device of the
//! site with [`classify`], and the devices enrollment schedules are uploaded on the
//! `comanagement` channel together with the devices already co-managed.

use cloudattach_sdk::OptionsExt;
use cloudattach_sdk::{
    ApplyOutcome, CheckReport, Device, DeviceParts, Environment, Explanation, Finding, Host,
    HostError, Manifest, OptionSpec, Options, PlanDecision, Plugin, Record, SiteVersion, SyncMode,
    SyncStats, ValidateContext, is_collection_id, put_feature, settings_action, thousands,
    upload_from_devices,
};
use serde_json::{Value, json};

use cloudattach_model::comanagement::eligibility;
/// The eligibility rule, from the model (the cloud applies the same one to the devices it holds).
///
/// ```
/// use cloudattach_plugin_co_management::{classify, EligibilityClass};
/// use cloudattach_sdk::{Device, JoinType};
/// let d: Device = serde_json::from_str(r#"{"resource_id":1,"name":"PC-1","client":true,
///   "client_version":"5.00.8577","client_active":true,
///   "os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.16299",
///   "join_type":"domain","mdm_enrolled":false}"#).unwrap();
/// assert_eq!(d.join_type, JoinType::Domain);
/// assert_eq!(classify(&d), EligibilityClass::EligibleButNotAzureAdJoined);
/// ```
pub use cloudattach_model::comanagement::{
    EligibilityClass, IneligibleReason, classify, explain_class,
};

/// The plugin id.
pub const ID: &str = "co-management";

/// The upload channel of enrollment states.
pub const CHANNEL: &str = "comanagement";

/// What the product documentation says of co-management in Azure China Cloud.
const CHINA_ENROLLMENT_RULE: &str =
    "automatic enrollment of all eligible devices is the only option in Azure China Cloud";

/// The automatic enrollment setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enrollment {
    /// Every eligible device.
    All,
    /// The eligible devices of the pilot collection.
    Pilot,
    /// No device.
    None,
}

impl Enrollment {
    /// Every setting, in the order the wizard lists them.
    pub const ALL: [Enrollment; 3] = [Enrollment::All, Enrollment::Pilot, Enrollment::None];

    /// The identifier used in `attach.toml` and the cloud's settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Enrollment::All => "all",
            Enrollment::Pilot => "pilot",
            Enrollment::None => "none",
        }
    }

    /// Reads the `enrollment` option; absent means the default, `all`. An unknown value reads
    /// as `none` so that a bad option can never enroll devices (the core rejects it earlier).
    pub fn from_options(options: &Options) -> Enrollment {
        match options.text("enrollment") {
            None | Some("all") => Enrollment::All,
            Some("pilot") => Enrollment::Pilot,
            Some(_) => Enrollment::None,
        }
    }
}

/// The `pilot_collection` option, if set.
pub fn pilot_collection(options: &Options) -> Option<&str> {
    options.text("pilot_collection")
}

/// Device counts per eligibility class and per enrollment setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EligibilitySummary {
    /// Devices per class, indexed like [`EligibilityClass::ALL`].
    counts: [u64; 5],
    /// `ineligible` devices per reason, indexed like [`IneligibleReason::ALL`].
    ineligible: [u64; 5],
    /// `eligible` devices in the pilot collection (`None` without a usable pilot collection).
    pub eligible_in_pilot: Option<u64>,
    /// Devices of the site.
    pub total: u64,
}

impl EligibilitySummary {
    /// Classifies every device of the site; `pilot` is an existing pilot collection's id.
    pub fn collect(host: &dyn Host, pilot: Option<&str>) -> Result<Self, HostError> {
        let mut summary = EligibilitySummary {
            eligible_in_pilot: pilot.map(|_| 0),
            ..Default::default()
        };
        host.for_each_device(&mut |d| {
            let (class, why) = eligibility(d);
            summary.counts[class_index(class)] += 1;
            if let Some(i) = why.and_then(|r| IneligibleReason::ALL.iter().position(|x| *x == r)) {
                summary.ineligible[i] += 1;
            }
            summary.total += 1;
            if class == EligibilityClass::Eligible
                && let (Some(id), Some(n)) = (pilot, summary.eligible_in_pilot.as_mut())
                && host.is_member(id, d.resource_id)
            {
                *n += 1;
            }
        })?;
        Ok(summary)
    }

    /// Devices of one class.
    pub fn count(&self, class: EligibilityClass) -> u64 {
        self.counts[class_index(class)]
    }

    /// `ineligible` devices for one reason.
    pub fn ineligible(&self, reason: IneligibleReason) -> u64 {
        IneligibleReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.ineligible[i])
    }

    /// `{"no_client": n, "client_too_old": n, "server_os": n, "not_windows_client": n,
    /// "not_joined": n}`, every key always present.
    pub fn ineligible_json(&self) -> Value {
        let map: serde_json::Map<String, Value> = IneligibleReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), Value::from(self.ineligible(*r))))
            .collect();
        Value::Object(map)
    }

    /// The devices an enrollment setting schedules (`None` for pilot without a collection).
    pub fn would_schedule(&self, enrollment: Enrollment) -> Option<u64> {
        match enrollment {
            Enrollment::All => Some(self.count(EligibilityClass::Eligible)),
            Enrollment::Pilot => self.eligible_in_pilot,
            Enrollment::None => Some(0),
        }
    }

    /// `{"comanaged": n, "eligible": n, "eligibleButNotAzureAdJoined": n, "needsOsUpdate": n,
    /// "ineligible": n}`, every key always present.
    pub fn eligibility_json(&self) -> Value {
        let map: serde_json::Map<String, Value> = EligibilityClass::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), Value::from(self.count(*c))))
            .collect();
        Value::Object(map)
    }

    /// `{"all": n, "pilot": n or null, "none": 0}`.
    pub fn would_schedule_json(&self) -> Value {
        json!({
            "all": self.would_schedule(Enrollment::All),
            "pilot": self.would_schedule(Enrollment::Pilot),
            "none": self.would_schedule(Enrollment::None),
        })
    }
}

fn class_index(class: EligibilityClass) -> usize {
    class.index()
}

/// Whether enrollment schedules this device: an `eligible` device, and for `pilot` one in the
/// pilot collection's effective membership.
fn schedules(
    host: &dyn Host,
    enrollment: Enrollment,
    pilot: Option<&str>,
    device: &Device,
) -> bool {
    classify(device) == EligibilityClass::Eligible
        && match enrollment {
            Enrollment::All => true,
            Enrollment::Pilot => pilot.is_some_and(|id| host.is_member(id, device.resource_id)),
            Enrollment::None => false,
        }
}

/// The co-management plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoManagement;

cloudattach_sdk::register_plugin!(CoManagement);

impl CoManagement {
    /// Uploads the enrollment records of the site — the devices enrollment schedules and the
    /// co-managed ones — streaming them as the host reads the inventory.
    fn upload(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Uploaded, HostError> {
        let enrollment = Enrollment::from_options(options);
        let pilot = pilot_collection(options);
        if enrollment == Enrollment::Pilot && pilot.is_none_or(|id| host.collection(id).is_none()) {
            // Uploading without the collection would withdraw every scheduled device.
            return Err(HostError::new(
                "pilot-collection-missing",
                format!(
                    "the pilot collection {} does not exist on site {}",
                    pilot.unwrap_or("(not set)"),
                    host.site().code
                ),
            ));
        }
        let mut uploaded = Uploaded::default();
        uploaded.stats = stream(host, mode, |d| {
            let state = if classify(d) == EligibilityClass::Comanaged {
                uploaded.comanaged += 1;
                "comanaged"
            } else if schedules(host, enrollment, pilot, d) {
                uploaded.scheduled += 1;
                "scheduledForEnrollment"
            } else {
                return None;
            };
            Some(Record {
                key: d.resource_id.to_string(),
                value: json!({ "resource_id": d.resource_id, "name": d.name, "state": state }),
            })
        })?;
        Ok(uploaded)
    }
}

/// What one upload of the `comanagement` channel did.
#[derive(Debug, Default)]
struct Uploaded {
    stats: SyncStats,
    /// Records with state `scheduledForEnrollment`.
    scheduled: u64,
    /// Records with state `comanaged`.
    comanaged: u64,
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

impl Plugin for CoManagement {
    fn manifest(&self) -> Manifest {
        Manifest::new(ID, "Co-management", env!("CARGO_PKG_VERSION"))
            .description(
                "Enrolls eligible devices into Intune automatically (all, a pilot collection or \
                 none); every workload stays with Configuration Manager",
            )
            .environments(&Environment::ALL)
            .min_site_version(SiteVersion(1710))
            .min_site_version_in(Environment::China, SiteVersion(2006))
            .in_default_settings()
            .option(OptionSpec::choice(
                "enrollment",
                &["all", "pilot", "none"],
                Some("all"),
                "Automatic enrollment in Intune: all eligible devices, the pilot collection's, or none",
            ))
            .option(OptionSpec::collection(
                "pilot_collection",
                "The pilot collection's id (e.g. \"PS100020\"); required with enrollment = \"pilot\"",
            ))
    }

    fn validate(&self, options: &Options, ctx: &ValidateContext) -> Vec<Finding> {
        let mut errors = vec![];
        let enrollment = Enrollment::from_options(options);
        match pilot_collection(options) {
            None if enrollment == Enrollment::Pilot => errors.push(Finding::error(
                "pilot-collection-required",
                "[features.co-management] enrollment = \"pilot\" needs `pilot_collection`, the \
                 id of the pilot collection (e.g. \"PS100020\")",
            )),
            Some(id) if !is_collection_id(id) => errors.push(Finding::error(
                "invalid-pilot-collection",
                format!(
                    "[features.co-management] pilot_collection = {id:?} is not a collection id: \
                     expected a site code and 5 hexadecimal digits, e.g. \"PS100020\""
                ),
            )),
            _ => {}
        }
        if ctx.environment == Environment::China && enrollment != Enrollment::All {
            errors.push(Finding::error(
                "china-enrollment-all-only",
                format!(
                    "[features.co-management] enrollment = \"{}\": {CHINA_ENROLLMENT_RULE}; set \
                     enrollment = \"all\"",
                    enrollment.as_str()
                ),
            ));
        }
        errors
    }

    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport {
        let mut report = CheckReport::default();
        let enrollment = Enrollment::from_options(options);
        let pilot = pilot_collection(options);
        let pilot_info = pilot.and_then(|id| host.collection(id));
        if let Some(id) = pilot {
            match &pilot_info {
                Some(c) => {
                    report.push(Finding::info(
                        "pilot-collection",
                        format!(
                            "pilot collection {} \"{}\" has {} members",
                            c.id,
                            c.name,
                            thousands(c.member_count)
                        ),
                    ));
                }
                None => {
                    let message = format!(
                        "the pilot collection {id} does not exist on site {}",
                        host.site().code
                    );
                    // Only pilot enrollment uses the collection; otherwise it is a leftover.
                    report.push(if enrollment == Enrollment::Pilot {
                        Finding::error("pilot-collection-missing", message)
                    } else {
                        Finding::warning("pilot-collection-missing", message)
                    });
                }
            }
        }
        let summary =
            match EligibilitySummary::collect(host, pilot_info.as_ref().map(|c| c.id.as_str())) {
                Ok(s) => s,
                Err(e) => {
                    report.push(Finding::error("inventory-unavailable", e.message));
                    return report;
                }
            };
        report
            .data
            .insert("eligibility".into(), summary.eligibility_json());
        report
            .data
            .insert("would_schedule".into(), summary.would_schedule_json());
        report
            .data
            .insert("devices_total".into(), summary.total.into());

        let breakdown: Vec<String> = EligibilityClass::ALL
            .iter()
            .map(|c| format!("{} {}", c.as_str(), thousands(summary.count(*c))))
            .collect();
        report.push(Finding::info(
            "eligibility",
            format!(
                "{} devices: {}",
                thousands(summary.total),
                breakdown.join(", ")
            ),
        ));
        report
            .data
            .insert("ineligible_reasons".into(), summary.ineligible_json());
        for reason in IneligibleReason::ALL {
            let n = summary.ineligible(reason);
            if n > 0 {
                report.push(Finding::info(
                    format!("ineligible-{}", reason.as_str().replace('_', "-")),
                    format!("{} ineligible devices: {}", thousands(n), reason.describe()),
                ));
            }
        }
        let scheduled = match (enrollment, summary.would_schedule(enrollment)) {
            (Enrollment::All, Some(n)) => format!(
                "enrollment \"all\" would schedule {} eligible devices",
                thousands(n)
            ),
            (Enrollment::Pilot, Some(n)) => format!(
                "enrollment \"pilot\" would schedule {} eligible devices of collection {}",
                thousands(n),
                pilot.unwrap_or_default()
            ),
            (Enrollment::Pilot, None) => {
                "enrollment \"pilot\" has no pilot collection to schedule from".into()
            }
            _ => "enrollment \"none\" schedules no device; co-managed devices are still reported"
                .into(),
        };
        report.push(Finding::info("would-schedule", scheduled));
        let domain_only = summary.count(EligibilityClass::EligibleButNotAzureAdJoined);
        if domain_only > 0 {
            report.push(Finding::info(
                "not-entra-joined",
                format!(
                    "{} devices are joined to Active Directory only: configure hybrid Entra ID join to make them eligible",
                    thousands(domain_only)
                ),
            ));
        }
        let old_os = summary.count(EligibilityClass::NeedsOsUpdate);
        if old_os > 0 {
            report.push(Finding::info(
                "needs-os-update",
                format!(
                    "{} devices run Windows 10 older than 1709 (build 16299): update them to make them eligible",
                    thousands(old_os)
                ),
            ));
        }
        report
    }

    fn settings(&self, options: &Options) -> Value {
        let enrollment = Enrollment::from_options(options);
        let mut settings = json!({ "enrollment": enrollment.as_str() });
        // The pilot collection matters only with pilot enrollment; storing it otherwise would
        // turn an unused option into an "update" on the Summary page.
        if enrollment == Enrollment::Pilot
            && let Some(id) = pilot_collection(options)
        {
            settings["pilot_collection"] = id.into();
        }
        settings
    }

    fn plan(&self, host: &dyn Host, options: &Options, applied: Option<&Value>) -> PlanDecision {
        let wanted = self.settings(options);
        let decision = PlanDecision::new(settings_action(&wanted, applied));
        let enrollment = Enrollment::from_options(options);
        let pilot = pilot_collection(options).filter(|id| host.collection(id).is_some());
        match EligibilitySummary::collect(host, pilot) {
            Ok(summary) => match summary.would_schedule(enrollment) {
                Some(n) => decision.with_detail(format!(
                    "schedule {} eligible devices for enrollment ({})",
                    thousands(n),
                    enrollment.as_str()
                )),
                None => decision,
            },
            Err(_) => decision,
        }
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        if let Err(e) = put_feature(host, ID, &self.settings(options)) {
            return ApplyOutcome::failed(e.code, e.message);
        }
        match self.upload(host, options, SyncMode::Delta) {
            Ok(Uploaded {
                stats,
                scheduled,
                comanaged,
            }) => {
                let mut outcome = ApplyOutcome::ok()
                    .count("devices_scheduled", scheduled)
                    .count("devices_enrolled", comanaged)
                    .count("sent", stats.sent);
                outcome.findings.push(Finding::info(
                    "enrollment-scheduled",
                    format!(
                        "scheduled {} eligible devices for enrollment ({}); {} devices are co-managed",
                        thousands(scheduled),
                        Enrollment::from_options(options).as_str(),
                        thousands(comanaged)
                    ),
                ));
                outcome
            }
            Err(e) => ApplyOutcome::failed(e.code, e.message),
        }
    }

    fn sync(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        self.upload(host, options, mode).map(|u| Some(u.stats))
    }

    fn explain_device(
        &self,
        host: &dyn Host,
        options: &Options,
        enabled: bool,
        device: &Device,
    ) -> Option<Explanation> {
        let (class, reason) = explain_class(device);
        let enrollment = Enrollment::from_options(options);
        let pilot = pilot_collection(options);
        let scheduled = enabled && schedules(host, enrollment, pilot, device);
        let scheduled_reason = if !enabled {
            "co-management is not enabled".to_string()
        } else if class == EligibilityClass::Comanaged {
            "already co-managed: nothing to schedule".to_string()
        } else if class != EligibilityClass::Eligible {
            format!("only eligible devices are scheduled; this one is {class}")
        } else {
            match (enrollment, pilot) {
                (Enrollment::All, _) => {
                    "enrollment = \"all\" schedules every eligible device".into()
                }
                (Enrollment::None, _) => "enrollment = \"none\" schedules no device".into(),
                (Enrollment::Pilot, Some(id)) if scheduled => {
                    format!("in the pilot collection {id}")
                }
                (Enrollment::Pilot, Some(id)) => {
                    format!(
                        "enrollment = \"pilot\" and the device is not in the pilot collection {id}"
                    )
                }
                (Enrollment::Pilot, None) => {
                    "enrollment = \"pilot\" without a pilot collection".into()
                }
            }
        };
        Some(Explanation::new(
            "co_management",
            json!({
                "class": class.as_str(),
                "reason": reason,
                "scheduled": scheduled,
                "scheduled_reason": scheduled_reason,
            }),
        ))
    }
}

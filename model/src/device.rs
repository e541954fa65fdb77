//! The site's device inventory record: one line of `devices.jsonl`, and the device record the
//! cloud's `devices` channel stores (without the Defender and analytics blocks).

use crate::record::DeviceParts;
use crate::version::{DottedVersion, client};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a device is joined to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinType {
    /// Hybrid joined: on-premises AD and Entra ID.
    Hybrid,
    /// Entra ID joined.
    Entra,
    /// Joined to on-premises Active Directory only.
    Domain,
    /// Not joined to any directory.
    Workgroup,
    /// Entra ID registered (workplace joined) only.
    Registered,
}

impl JoinType {
    /// The identifier used in the inventory format.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinType::Hybrid => "hybrid",
            JoinType::Entra => "entra",
            JoinType::Domain => "domain",
            JoinType::Workgroup => "workgroup",
            JoinType::Registered => "registered",
        }
    }
}

/// One device of the site.
///
/// ```
/// use cloudattach_model::Device;
/// let d: Device = serde_json::from_str(r#"{"resource_id":16777220,"name":"PC-1","client":true,
///   "client_version":"5.00.9106.1000","client_active":true,
///   "os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045",
///   "join_type":"hybrid","mdm_enrolled":false}"#).unwrap();
/// assert!(d.is_windows_client_os());
/// assert!(!d.is_server());
/// ```
///
/// The struct is `#[non_exhaustive]`: fields may be added in a minor version. Outside this
/// crate, build one with [`Device::new`] and set the fields you need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Device {
    /// The site's unique resource id (SMSID).
    pub resource_id: i64,
    /// The device name.
    pub name: String,
    /// Whether the Configuration Manager client is installed.
    pub client: bool,
    /// The client version, e.g. "5.00.9106.1000"; absent without a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// Whether the client reported recently.
    pub client_active: bool,
    /// The DeviceOS caption, e.g. "Microsoft Windows NT Workstation 10.0".
    pub os: String,
    /// The OS build, e.g. "10.0.19045".
    pub os_build: String,
    /// How the device is joined.
    pub join_type: JoinType,
    /// Whether the device is enrolled in MDM (Intune).
    pub mdm_enrolled: bool,
    /// The Entra ID device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_device_id: Option<String>,
    /// The primary user (UPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_user: Option<String>,
    /// Hardware model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Hardware manufacturer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Domain name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Operating system SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// When the device was last active (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
    /// Microsoft Defender antivirus state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defender: Option<DefenderState>,
    /// Endpoint analytics telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<Analytics>,
    /// What the device's inventory line carries that this model does not, in the line's own
    /// shape (see [`Device::extension_at`]). Plugins may read it; it is never part of a record
    /// (a device record with an `extension` key is refused), so the built-in features never
    /// upload it.
    #[serde(skip)]
    pub extension: Map<String, Value>,
}

/// The longest text field a device record may carry, in characters.
pub const MAX_TEXT_LEN: usize = 1024;

/// Days of crash counts an app's record may carry (Endpoint analytics' 14-day window).
pub const MAX_CRASH_DAYS: usize = 14;

impl Device {
    /// A device with only its resource id and name: no client, no OS caption or build, in a
    /// workgroup, not MDM-enrolled, and none of the optional fields or blocks. Set the other
    /// fields afterwards:
    ///
    /// ```
    /// use cloudattach_model::{Device, JoinType};
    /// let mut d = Device::new(7, "PC-7");
    /// d.client = true;
    /// d.join_type = JoinType::Hybrid;
    /// assert_eq!((d.resource_id, d.name.as_str()), (7, "PC-7"));
    /// ```
    pub fn new(resource_id: i64, name: impl Into<String>) -> Self {
        Device {
            resource_id,
            name: name.into(),
            client: false,
            client_version: None,
            client_active: false,
            os: String::new(),
            os_build: String::new(),
            join_type: JoinType::Workgroup,
            mdm_enrolled: false,
            entra_device_id: None,
            primary_user: None,
            model: None,
            manufacturer: None,
            serial_number: None,
            domain: None,
            sku: None,
            last_active: None,
            defender: None,
            analytics: None,
            extension: Map::new(),
        }
    }

    /// The extension data at a JSON pointer (RFC 6901), e.g.
    /// `"/bitlocker/recovery_key_escrowed"`; `None` when the line carried nothing there.
    ///
    /// The extension data mirrors the inventory line minus what the model keeps: an unknown
    /// top-level field is there under its own name (`/bitlocker`), an unknown field of a block
    /// under the block's name (`/defender/asr_mode`), one of a detection or an app under the
    /// list's name with the entry's index (`/defender/detections/0/remediation`, `{}` for the
    /// entries without any), and an app's `daily_crashes` longer than [`MAX_CRASH_DAYS`] whole
    /// under `/analytics/apps/<index>/daily_crashes` (the model keeps the newest days).
    ///
    /// ```
    /// use cloudattach_model::Device;
    /// let mut d = Device::new(1, "PC-1");
    /// d.extension.insert("bitlocker".into(), serde_json::json!({ "recovery_key_escrowed": true }));
    /// assert_eq!(d.extension_at("/bitlocker/recovery_key_escrowed"), Some(&serde_json::Value::Bool(true)));
    /// assert_eq!(d.extension_at("/tpm"), None);
    /// ```
    pub fn extension_at(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, rest) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // RFC 6901 escapes: `~1` is `/`, `~0` is `~`.
        let first = first.replace("~1", "/").replace("~0", "~");
        self.extension.get(&first)?.pointer(rest)
    }

    /// A copy carrying only the optional blocks in `parts` (the others are `None`, the extension
    /// data empty), made field
    /// by field so that the blocks left out are never copied: e.g. the record of the `devices`
    /// channel, which carries neither block, is `device.with_parts(DeviceParts::NONE)`.
    ///
    /// ```
    /// use cloudattach_model::{Analytics, Device, DeviceParts};
    /// let mut d = Device::new(1, "PC-1");
    /// d.analytics = Some(Analytics::default());
    /// assert!(d.with_parts(DeviceParts::NONE).analytics.is_none());
    /// d.extension.insert("tpm".into(), serde_json::json!("2.0"));
    /// assert!(d.with_parts(DeviceParts::ANALYTICS).extension.is_empty());
    /// assert_eq!(d.with_parts(DeviceParts::ALL), d);
    /// ```
    pub fn with_parts(&self, parts: DeviceParts) -> Device {
        Device {
            resource_id: self.resource_id,
            name: self.name.clone(),
            client: self.client,
            client_version: self.client_version.clone(),
            client_active: self.client_active,
            os: self.os.clone(),
            os_build: self.os_build.clone(),
            join_type: self.join_type,
            mdm_enrolled: self.mdm_enrolled,
            entra_device_id: self.entra_device_id.clone(),
            primary_user: self.primary_user.clone(),
            model: self.model.clone(),
            manufacturer: self.manufacturer.clone(),
            serial_number: self.serial_number.clone(),
            domain: self.domain.clone(),
            sku: self.sku.clone(),
            last_active: self.last_active.clone(),
            defender: if parts.defender {
                self.defender.clone()
            } else {
                None
            },
            analytics: if parts.analytics {
                self.analytics.clone()
            } else {
                None
            },
            extension: if parts.extension {
                self.extension.clone()
            } else {
                Map::new()
            },
        }
    }

    /// The rules every device must meet beyond its JSON shape, shared by the site reader and
    /// the cloud so that a device the site accepts is one the cloud accepts.
    ///
    /// ```
    /// use cloudattach_model::Device;
    /// let mut d: Device = serde_json::from_str(r#"{"resource_id":1,"name":"PC","client":true,
    ///   "client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045",
    ///   "join_type":"entra","mdm_enrolled":false}"#).unwrap();
    /// assert!(d.validate().is_ok());
    /// d.name = " ".into();
    /// assert_eq!(d.validate().unwrap_err(), "`name` is empty");
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_id <= 0 {
            return Err(format!(
                "`resource_id` {} is not positive",
                self.resource_id
            ));
        }
        if self.name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        let texts = [
            ("name", Some(&self.name)),
            ("client_version", self.client_version.as_ref()),
            ("os", Some(&self.os)),
            ("os_build", Some(&self.os_build)),
            ("entra_device_id", self.entra_device_id.as_ref()),
            ("primary_user", self.primary_user.as_ref()),
            ("model", self.model.as_ref()),
            ("manufacturer", self.manufacturer.as_ref()),
            ("serial_number", self.serial_number.as_ref()),
            ("domain", self.domain.as_ref()),
            ("sku", self.sku.as_ref()),
            ("last_active", self.last_active.as_ref()),
        ];
        for (field, value) in texts {
            // No more characters than bytes: only a long text is counted.
            if value.is_some_and(|v| v.len() > MAX_TEXT_LEN && v.chars().count() > MAX_TEXT_LEN) {
                return Err(format!(
                    "`{field}` is longer than {MAX_TEXT_LEN} characters"
                ));
            }
        }
        if let Some(a) = &self.analytics {
            for app in &a.apps {
                if app.daily_crashes.len() > MAX_CRASH_DAYS {
                    return Err(format!(
                        "`analytics.apps` {:?}: `daily_crashes` has {} entries, at most {MAX_CRASH_DAYS} (one per day)",
                        app.name,
                        app.daily_crashes.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The client version, parsed; `None` without a client or with an unreadable version.
    pub fn client_version(&self) -> Option<DottedVersion> {
        if !self.client {
            return None;
        }
        self.client_version
            .as_deref()
            .and_then(DottedVersion::parse)
    }

    /// The OS build, parsed.
    pub fn os_build(&self) -> Option<DottedVersion> {
        DottedVersion::parse(&self.os_build)
    }

    /// A server OS: an `os` caption containing "Server".
    pub fn is_server(&self) -> bool {
        self.os.contains("Server")
    }

    /// Windows 10 or 11: the workstation caption with an OS build of 10.0.x.
    pub fn is_windows_client_os(&self) -> bool {
        self.os == "Microsoft Windows NT Workstation 10.0"
            && self
                .os_build()
                .is_some_and(|b| b.part(0) == 10 && b.part(1) == 0)
    }

    /// Windows 11 (build 22000 or later); implies [`Device::is_windows_client_os`].
    pub fn is_windows_11(&self) -> bool {
        self.is_windows_client_os()
            && self
                .os_build()
                .is_some_and(|b| client::at_least(&b, client::WINDOWS_11_BUILD))
    }

    /// The client version is at least `min` (one of [`crate::version::client`]'s constants).
    pub fn client_at_least(&self, min: [u32; 3]) -> bool {
        self.client_version()
            .is_some_and(|v| client::at_least(&v, min))
    }
}

/// Microsoft Defender antivirus state of a device, as the Defender WMI provider reports it.
///
/// `#[non_exhaustive]`: start from [`DefenderState::default`] (everything off, no versions,
/// no detections) and set fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DefenderState {
    /// ProductStatus bit field (0 = no issues).
    #[serde(default)]
    pub product_status: u32,
    /// ComputerState (0 clean, 1 pending full scan, 2 pending reboot, 4 pending manual steps, 8 pending offline scan, 16 critical failure).
    #[serde(default)]
    pub computer_state: u32,
    /// DefenderEnabled.
    #[serde(default)]
    pub defender_enabled: bool,
    /// RtpEnabled (real-time protection).
    #[serde(default)]
    pub rtp_enabled: bool,
    /// NisEnabled (network inspection).
    #[serde(default)]
    pub nis_enabled: bool,
    /// QuickScanOverdue.
    #[serde(default)]
    pub quick_scan_overdue: bool,
    /// FullScanOverdue.
    #[serde(default)]
    pub full_scan_overdue: bool,
    /// SignatureOutOfDate.
    #[serde(default)]
    pub signature_out_of_date: bool,
    /// RebootRequired.
    #[serde(default)]
    pub reboot_required: bool,
    /// FullScanRequired.
    #[serde(default)]
    pub full_scan_required: bool,
    /// EngineVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// SignatureVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_version: Option<String>,
    /// DefenderVersion (platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defender_version: Option<String>,
    /// QuickScanTime (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick_scan_time: Option<String>,
    /// FullScanTime (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_scan_time: Option<String>,
    /// TamperProtectionEnabled.
    #[serde(default)]
    pub tamper_protection_enabled: bool,
    /// IsMdeSenseRunning.
    #[serde(default)]
    pub is_mde_sense_running: bool,
    /// MdeOnboardingState ("onboarded" | "notOnboarded").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mde_onboarding_state: Option<String>,
    /// IsVirtualMachine.
    #[serde(default)]
    pub is_virtual_machine: bool,
    /// LastUpdateTime (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// Malware detections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<Detection>,
}

/// One malware detection. `#[non_exhaustive]`: build it with [`Detection::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Detection {
    /// ThreatID.
    pub threat_id: i64,
    /// ThreatName, e.g. "Trojan:Win32/Wacatac.B!ml".
    pub threat_name: String,
    /// Category, e.g. "Trojan".
    pub category: String,
    /// Severity: "low" | "moderate" | "high" | "severe".
    pub severity: String,
    /// CurrentStatus: "active" | "quarantined" | "removed" | "allowed" | "cleaned".
    pub current_status: String,
    /// InitialDetectionTime (RFC 3339).
    pub initial_detection_time: String,
    /// NumberOfDetections.
    pub number_of_detections: u32,
}

impl Detection {
    /// A detection with every field given, in the order of the struct.
    pub fn new(
        threat_id: i64,
        threat_name: impl Into<String>,
        category: impl Into<String>,
        severity: impl Into<String>,
        current_status: impl Into<String>,
        initial_detection_time: impl Into<String>,
        number_of_detections: u32,
    ) -> Self {
        Detection {
            threat_id,
            threat_name: threat_name.into(),
            category: category.into(),
            severity: severity.into(),
            current_status: current_status.into(),
            initial_detection_time: initial_detection_time.into(),
            number_of_detections,
        }
    }
}

/// Endpoint analytics telemetry of a device: startup performance and app reliability.
///
/// `#[non_exhaustive]`: build it with [`Analytics::new`] (or start from
/// [`Analytics::default`]) and set fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Analytics {
    /// coreBootTimeInMilliseconds.
    pub core_boot_ms: u32,
    /// totalBootTimeInMilliseconds.
    pub total_boot_ms: u32,
    /// gpLogonDurationInMilliseconds.
    pub gp_logon_ms: u32,
    /// desktopUsableDurationInMilliseconds.
    pub desktop_usable_ms: u32,
    /// App usage and crashes over the last 14 days.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppUsage>,
}

impl Analytics {
    /// Startup telemetry (in milliseconds) without app usage.
    pub fn new(
        core_boot_ms: u32,
        total_boot_ms: u32,
        gp_logon_ms: u32,
        desktop_usable_ms: u32,
    ) -> Self {
        Analytics {
            core_boot_ms,
            total_boot_ms,
            gp_logon_ms,
            desktop_usable_ms,
            apps: Vec::new(),
        }
    }

    /// Sets the app usage.
    pub fn with_apps(mut self, apps: Vec<AppUsage>) -> Self {
        self.apps = apps;
        self
    }
}

/// One app's usage and crashes on a device over the last 14 days. `#[non_exhaustive]`: build
/// it with [`AppUsage::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AppUsage {
    /// The app's display name, e.g. "Microsoft Teams".
    pub name: String,
    /// Foreground usage in minutes over the window.
    pub usage_minutes: u32,
    /// Crashes per day, oldest first, at most 14 entries.
    #[serde(default)]
    pub daily_crashes: Vec<u32>,
}

impl AppUsage {
    /// An app's usage over the window and its crashes per day, oldest first.
    pub fn new(name: impl Into<String>, usage_minutes: u32, daily_crashes: Vec<u32>) -> Self {
        AppUsage {
            name: name.into(),
            usage_minutes,
            daily_crashes,
        }
    }
}

//! Co-management eligibility: the rule that puts every device in one class named as in
//! Intune's `comanagementEligibleType`, and why.
//!
//! One copy, used by the `co-management` plugin (its check, plan and upload) and by the cloud
//! (the `eligibility` of each device in `GET /api/v1/devices` and its filter).

use crate::device::{Device, JoinType};
use crate::version::client;

/// A device's co-management eligibility, one class per device, named as in Intune's
/// `comanagementEligibleType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EligibilityClass {
    /// Already co-managed: a client and enrolled in MDM.
    Comanaged,
    /// Meets every prerequisite: hybrid or Entra joined Windows 10 1709+/11, client 1710+.
    Eligible,
    /// Would be eligible, but only joined to on-premises Active Directory.
    EligibleButNotAzureAdJoined,
    /// Windows 10 older than 1709 (build 16299).
    NeedsOsUpdate,
    /// Cannot be co-managed: no (or too old a) client, a server, not Windows 10/11, or only
    /// registered / not joined.
    Ineligible,
}

impl EligibilityClass {
    /// Every class, in the order the rules are tried.
    pub const ALL: [EligibilityClass; 5] = [
        EligibilityClass::Comanaged,
        EligibilityClass::Ineligible,
        EligibilityClass::NeedsOsUpdate,
        EligibilityClass::EligibleButNotAzureAdJoined,
        EligibilityClass::Eligible,
    ];

    /// The Intune name (`comanagementEligibleType`), the key in the check's `eligibility`.
    pub fn as_str(self) -> &'static str {
        match self {
            EligibilityClass::Comanaged => "comanaged",
            EligibilityClass::Eligible => "eligible",
            EligibilityClass::EligibleButNotAzureAdJoined => "eligibleButNotAzureAdJoined",
            EligibilityClass::NeedsOsUpdate => "needsOsUpdate",
            EligibilityClass::Ineligible => "ineligible",
        }
    }

    /// The class named `s` ([`EligibilityClass::as_str`]), exactly.
    ///
    /// ```
    /// use cloudattach_model::comanagement::EligibilityClass;
    /// assert_eq!(EligibilityClass::parse("needsOsUpdate"), Some(EligibilityClass::NeedsOsUpdate));
    /// assert_eq!(EligibilityClass::parse("Eligible"), None);
    /// ```
    pub fn parse(s: &str) -> Option<EligibilityClass> {
        EligibilityClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The class's position in [`EligibilityClass::ALL`] (0 to 4): a stable number, stored by
    /// the cloud in a record's flags.
    pub fn index(self) -> usize {
        EligibilityClass::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or_default()
    }

    /// The class at `i` in [`EligibilityClass::ALL`].
    pub fn from_index(i: usize) -> Option<EligibilityClass> {
        EligibilityClass::ALL.get(i).copied()
    }
}

impl std::fmt::Display for EligibilityClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a device is `ineligible`, in the order the rules are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IneligibleReason {
    /// No Configuration Manager client.
    NoClient,
    /// A client older than 5.00.8577 (1710), or an unreadable client version.
    ClientTooOld,
    /// A server OS.
    ServerOs,
    /// Not Windows 10 or 11.
    NotWindowsClient,
    /// Only registered in Entra ID, or in a workgroup: not joined.
    NotJoined,
}

impl IneligibleReason {
    /// Every reason, in the order the rules are tried.
    pub const ALL: [IneligibleReason; 5] = [
        IneligibleReason::NoClient,
        IneligibleReason::ClientTooOld,
        IneligibleReason::ServerOs,
        IneligibleReason::NotWindowsClient,
        IneligibleReason::NotJoined,
    ];

    /// The key in the check's `ineligible_reasons`.
    pub fn as_str(self) -> &'static str {
        match self {
            IneligibleReason::NoClient => "no_client",
            IneligibleReason::ClientTooOld => "client_too_old",
            IneligibleReason::ServerOs => "server_os",
            IneligibleReason::NotWindowsClient => "not_windows_client",
            IneligibleReason::NotJoined => "not_joined",
        }
    }

    /// What the reason means and what would change it, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            IneligibleReason::NoClient => {
                "no Configuration Manager client: install the client (1710 or later)"
            }
            IneligibleReason::ClientTooOld => {
                "the client is older than 5.00.8577 (1710) or its version is unreadable: upgrade \
                 the client"
            }
            IneligibleReason::ServerOs => "a server OS: servers cannot be co-managed",
            IneligibleReason::NotWindowsClient => {
                "not Windows 10 or 11: only Windows 10 and 11 can be co-managed"
            }
            IneligibleReason::NotJoined => {
                "only registered in Entra ID or in a workgroup: join it to Active Directory with \
                 hybrid Entra ID join, or to Entra ID"
            }
        }
    }
}

/// The class of a device and, for `ineligible`, which rule made it so.
///
/// ```
/// use cloudattach_model::comanagement::{eligibility, EligibilityClass, IneligibleReason};
/// let d = cloudattach_model::Device::new(1, "PC-1");
/// assert_eq!(eligibility(&d), (EligibilityClass::Ineligible, Some(IneligibleReason::NoClient)));
/// ```
pub fn eligibility(device: &Device) -> (EligibilityClass, Option<IneligibleReason>) {
    if device.client && device.mdm_enrolled {
        return (EligibilityClass::Comanaged, None);
    }
    // `client_at_least` is false without a client and for an unreadable version.
    let ineligible = if !device.client {
        Some(IneligibleReason::NoClient)
    } else if !device.client_at_least(client::CO_MANAGEMENT) {
        Some(IneligibleReason::ClientTooOld)
    } else if device.is_server() {
        Some(IneligibleReason::ServerOs)
    } else if !device.is_windows_client_os() {
        Some(IneligibleReason::NotWindowsClient)
    } else if matches!(device.join_type, JoinType::Registered | JoinType::Workgroup) {
        Some(IneligibleReason::NotJoined)
    } else {
        None
    };
    if ineligible.is_some() {
        return (EligibilityClass::Ineligible, ineligible);
    }
    // Windows 11 builds start at 22000, so a build below 16299 is always Windows 10.
    let below_1709 = device
        .os_build()
        .is_some_and(|b| !client::at_least(&b, client::WINDOWS_1709_BUILD));
    if below_1709 {
        return (EligibilityClass::NeedsOsUpdate, None);
    }
    if device.join_type == JoinType::Domain {
        return (EligibilityClass::EligibleButNotAzureAdJoined, None);
    }
    (EligibilityClass::Eligible, None)
}

/// Classifies a device by the eligibility rules, in order; the first rule that matches decides.
///
/// ```
/// use cloudattach_model::comanagement::{classify, EligibilityClass};
/// use cloudattach_model::Device;
/// let d: Device = serde_json::from_str(r#"{"resource_id":1,"name":"PC-1","client":true,
///   "client_version":"5.00.8577","client_active":true,
///   "os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.16299",
///   "join_type":"domain","mdm_enrolled":false}"#).unwrap();
/// assert_eq!(classify(&d), EligibilityClass::EligibleButNotAzureAdJoined);
/// ```
pub fn classify(device: &Device) -> EligibilityClass {
    eligibility(device).0
}

/// The class of a device with the rule that decided it and what would change it.
pub fn explain_class(device: &Device) -> (EligibilityClass, String) {
    let (class, why) = eligibility(device);
    let reason = match (class, why) {
        (EligibilityClass::Ineligible, Some(r)) => r.describe().to_string(),
        (EligibilityClass::Comanaged, _) => {
            "a client enrolled in MDM: already co-managed".to_string()
        }
        (EligibilityClass::NeedsOsUpdate, _) => format!(
            "Windows 10 build {} is older than 1709 (16299): update Windows to make it eligible",
            device.os_build
        ),
        (EligibilityClass::EligibleButNotAzureAdJoined, _) => {
            "joined to Active Directory only: configure hybrid Entra ID join to make it eligible"
                .to_string()
        }
        _ => format!(
            "Windows 10/11 (build {}), {} joined, client {}: meets every prerequisite",
            device.os_build,
            match device.join_type {
                JoinType::Entra => "Entra ID",
                _ => "hybrid Entra ID",
            },
            device.client_version.as_deref().unwrap_or("?")
        ),
    };
    (class, reason)
}

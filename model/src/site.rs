//! The site as `site.toml` describes it, and its collections.

use crate::version::SiteVersion;
use serde::{Deserialize, Serialize};

/// The state of the site's service connection point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionPoint {
    /// Online: connected to the cloud.
    Online,
    /// Offline: updates are imported by hand.
    Offline,
    /// Not installed.
    None,
}

/// The site as `site.toml` describes it.
///
/// `#[non_exhaustive]`: build it with [`SiteInfo::new`] and the `with_*` methods.
///
/// ```
/// use cloudattach_model::{ConnectionPoint, SiteInfo, SiteVersion};
/// let site = SiteInfo::new("PS1", "Primary site", SiteVersion(2303), "6f1c1a52-3a1e-4b9c-9d33-0c2f5d7a9e10")
///     .with_service_connection_point(ConnectionPoint::Online)
///     .with_administration_service(true)
///     .with_user_discovery(true, false);
/// assert!(site.entra_user_discovery && !site.ad_user_discovery);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SiteInfo {
    /// Site code, 3 characters (e.g. "PS1").
    pub code: String,
    /// Site name.
    pub name: String,
    /// Configuration Manager version.
    pub version: SiteVersion,
    /// The hierarchy id (a UUID).
    pub hierarchy_id: String,
    /// Service connection point state.
    pub service_connection_point: ConnectionPoint,
    /// Whether the administration service (SMS Provider REST API) works.
    pub administration_service: bool,
    /// Whether Entra ID user discovery is enabled.
    pub entra_user_discovery: bool,
    /// Whether Active Directory user discovery is enabled.
    pub ad_user_discovery: bool,
}

impl SiteInfo {
    /// A site without a service connection point ([`ConnectionPoint::None`]), without a working
    /// administration service and without user discovery.
    pub fn new(
        code: impl Into<String>,
        name: impl Into<String>,
        version: SiteVersion,
        hierarchy_id: impl Into<String>,
    ) -> Self {
        SiteInfo {
            code: code.into(),
            name: name.into(),
            version,
            hierarchy_id: hierarchy_id.into(),
            service_connection_point: ConnectionPoint::None,
            administration_service: false,
            entra_user_discovery: false,
            ad_user_discovery: false,
        }
    }

    /// Sets the service connection point's state.
    pub fn with_service_connection_point(mut self, state: ConnectionPoint) -> Self {
        self.service_connection_point = state;
        self
    }

    /// Sets whether the administration service works.
    pub fn with_administration_service(mut self, works: bool) -> Self {
        self.administration_service = works;
        self
    }

    /// Sets whether Entra ID and Active Directory user discovery are enabled.
    pub fn with_user_discovery(mut self, entra: bool, ad: bool) -> Self {
        self.entra_user_discovery = entra;
        self.ad_user_discovery = ad;
        self
    }
}

/// How a device stands in one collection ([`Host::memberships`] in the SDK): a member, and how
/// (`direct`, `included`, `all_systems`), or held out by the limiting collection (`limited`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeviceMembership {
    /// The collection's id.
    pub collection_id: String,
    /// Its name.
    pub name: String,
    /// Whether the device is in its effective membership.
    pub member: bool,
    /// `direct`, `included`, `all_systems`, `limited`, or `member` when the host cannot say.
    pub how: String,
    /// The same for a person ("through the included collection PS100104 (Finance Laptops)").
    pub detail: String,
}

impl DeviceMembership {
    /// A membership.
    pub fn new(
        collection_id: impl Into<String>,
        name: impl Into<String>,
        member: bool,
        how: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        DeviceMembership {
            collection_id: collection_id.into(),
            name: name.into(),
            member,
            how: how.into(),
            detail: detail.into(),
        }
    }
}

/// The id of the built-in "All Systems" collection: every device of the site.
pub const ALL_SYSTEMS: &str = "SMS00001";

/// A collection of the site.
///
/// `#[non_exhaustive]`: build it with [`CollectionInfo::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CollectionInfo {
    /// Collection id, e.g. "PS100012".
    pub id: String,
    /// Collection name.
    pub name: String,
    /// Number of devices in its effective membership.
    pub member_count: u64,
}

impl CollectionInfo {
    /// A collection with its effective member count.
    pub fn new(id: impl Into<String>, name: impl Into<String>, member_count: u64) -> Self {
        CollectionInfo {
            id: id.into(),
            name: name.into(),
            member_count,
        }
    }
}

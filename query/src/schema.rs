//! The entities (tables) a query reads, their columns, and the values of their rows.

use cloudattach_model::{Analytics, AppUsage, DefenderState, Detection, Device};
use std::fmt;

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// A 64-bit integer (KQL `long`).
    Long,
    /// A boolean (KQL `bool`).
    Bool,
    /// A string (KQL `string`).
    String,
}

impl ColumnType {
    /// The KQL name of the type: `long`, `bool` or `string`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Long => "long",
            ColumnType::Bool => "bool",
            ColumnType::String => "string",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One column of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The column name (matched exactly, case-sensitively).
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
    /// Whether its value may be null (an optional field the device does not carry).
    pub nullable: bool,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool) -> Column {
    Column { name, ty, nullable }
}

use ColumnType::{Bool, Long, String as Str};

const DEVICE: &[Column] = &[
    col("resource_id", Long, false),
    col("name", Str, false),
    col("client", Bool, false),
    col("client_version", Str, true),
    col("client_active", Bool, false),
    col("os", Str, false),
    col("os_build", Str, false),
    col("join_type", Str, false),
    col("mdm_enrolled", Bool, false),
    col("entra_device_id", Str, true),
    col("primary_user", Str, true),
    col("model", Str, true),
    col("manufacturer", Str, true),
    col("serial_number", Str, true),
    col("domain", Str, true),
    col("sku", Str, true),
    col("last_active", Str, true),
];

const DEFENDER_STATE: &[Column] = &[
    col("resource_id", Long, false),
    col("device", Str, false),
    col("product_status", Long, false),
    col("computer_state", Long, false),
    col("defender_enabled", Bool, false),
    col("rtp_enabled", Bool, false),
    col("nis_enabled", Bool, false),
    col("quick_scan_overdue", Bool, false),
    col("full_scan_overdue", Bool, false),
    col("signature_out_of_date", Bool, false),
    col("reboot_required", Bool, false),
    col("full_scan_required", Bool, false),
    col("engine_version", Str, true),
    col("signature_version", Str, true),
    col("defender_version", Str, true),
    col("quick_scan_time", Str, true),
    col("full_scan_time", Str, true),
    col("tamper_protection_enabled", Bool, false),
    col("is_mde_sense_running", Bool, false),
    col("mde_onboarding_state", Str, true),
    col("is_virtual_machine", Bool, false),
    col("last_update_time", Str, true),
];

const DEFENDER_DETECTION: &[Column] = &[
    col("resource_id", Long, false),
    col("device", Str, false),
    col("threat_id", Long, false),
    col("threat_name", Str, false),
    col("category", Str, false),
    col("severity", Str, false),
    col("current_status", Str, false),
    col("initial_detection_time", Str, false),
    col("number_of_detections", Long, false),
];

const ANALYTICS: &[Column] = &[
    col("resource_id", Long, false),
    col("device", Str, false),
    col("core_boot_ms", Long, false),
    col("total_boot_ms", Long, false),
    col("gp_logon_ms", Long, false),
    col("desktop_usable_ms", Long, false),
    col("app_count", Long, false),
];

const ANALYTICS_APP: &[Column] = &[
    col("resource_id", Long, false),
    col("device", Str, false),
    col("app", Str, false),
    col("usage_minutes", Long, false),
    col("crashes", Long, false),
];

/// The table a query starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// One row per device.
    Device,
    /// One row per device with a Defender block.
    DefenderState,
    /// One row per Defender detection.
    DefenderDetection,
    /// One row per device with an Endpoint analytics block.
    Analytics,
    /// One row per app of a device's Endpoint analytics block.
    AnalyticsApp,
}

impl Entity {
    /// Every entity, in the order of the documentation.
    pub const ALL: [Entity; 5] = [
        Entity::Device,
        Entity::DefenderState,
        Entity::DefenderDetection,
        Entity::Analytics,
        Entity::AnalyticsApp,
    ];

    /// The entity's name as written in a query (matched case-insensitively).
    pub fn name(self) -> &'static str {
        match self {
            Entity::Device => "Device",
            Entity::DefenderState => "DefenderState",
            Entity::DefenderDetection => "DefenderDetection",
            Entity::Analytics => "Analytics",
            Entity::AnalyticsApp => "AnalyticsApp",
        }
    }

    /// The entity named `name`, ignoring case.
    pub fn from_name(name: &str) -> Option<Entity> {
        Entity::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(name))
    }

    /// The entity's columns, in the order a row carries them.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Entity::Device => DEVICE,
            Entity::DefenderState => DEFENDER_STATE,
            Entity::DefenderDetection => DEFENDER_DETECTION,
            Entity::Analytics => ANALYTICS,
            Entity::AnalyticsApp => ANALYTICS_APP,
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value read from a row, borrowing its strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Long(i64),
    Real(f64),
    Str(&'a str),
}

fn opt(s: &Option<String>) -> Val<'_> {
    s.as_deref().map_or(Val::Null, Val::Str)
}

/// Anything a predicate can read columns from.
pub(crate) trait Row {
    fn get(&self, index: usize) -> Val<'_>;
}

/// One row of an entity, read in place from the device (nothing is copied until a row is kept).
#[derive(Clone, Copy)]
pub(crate) enum Source<'d> {
    Device(&'d Device),
    Defender(&'d Device, &'d DefenderState),
    Detection(&'d Device, &'d Detection),
    Analytics(&'d Device, &'d Analytics),
    App(&'d Device, &'d AppUsage),
}

impl Row for Source<'_> {
    fn get(&self, i: usize) -> Val<'_> {
        match *self {
            Source::Device(d) => match i {
                0 => Val::Long(d.resource_id),
                1 => Val::Str(&d.name),
                2 => Val::Bool(d.client),
                3 => opt(&d.client_version),
                4 => Val::Bool(d.client_active),
                5 => Val::Str(&d.os),
                6 => Val::Str(&d.os_build),
                7 => Val::Str(d.join_type.as_str()),
                8 => Val::Bool(d.mdm_enrolled),
                9 => opt(&d.entra_device_id),
                10 => opt(&d.primary_user),
                11 => opt(&d.model),
                12 => opt(&d.manufacturer),
                13 => opt(&d.serial_number),
                14 => opt(&d.domain),
                15 => opt(&d.sku),
                16 => opt(&d.last_active),
                _ => Val::Null,
            },
            Source::Defender(d, s) => match i {
                0 => Val::Long(d.resource_id),
                1 => Val::Str(&d.name),
                2 => Val::Long(s.product_status.into()),
                3 => Val::Long(s.computer_state.into()),
                4 => Val::Bool(s.defender_enabled),
                5 => Val::Bool(s.rtp_enabled),
                6 => Val::Bool(s.nis_enabled),
                7 => Val::Bool(s.quick_scan_overdue),
                8 => Val::Bool(s.full_scan_overdue),
                9 => Val::Bool(s.signature_out_of_date),
                10 => Val::Bool(s.reboot_required),
                11 => Val::Bool(s.full_scan_required),
                12 => opt(&s.engine_version),
                13 => opt(&s.signature_version),
                14 => opt(&s.defender_version),
                15 => opt(&s.quick_scan_time),
                16 => opt(&s.full_scan_time),
                17 => Val::Bool(s.tamper_protection_enabled),
                18 => Val::Bool(s.is_mde_sense_running),
                19 => opt(&s.mde_onboarding_state),
                20 => Val::Bool(s.is_virtual_machine),
                21 => opt(&s.last_update_time),
                _ => Val::Null,
            },
            Source::Detection(d, x) => match i {
                0 => Val::Long(d.resource_id),
                1 => Val::Str(&d.name),
                2 => Val::Long(x.threat_id),
                3 => Val::Str(&x.threat_name),
                4 => Val::Str(&x.category),
                5 => Val::Str(&x.severity),
                6 => Val::Str(&x.current_status),
                7 => Val::Str(&x.initial_detection_time),
                8 => Val::Long(x.number_of_detections.into()),
                _ => Val::Null,
            },
            Source::Analytics(d, a) => match i {
                0 => Val::Long(d.resource_id),
                1 => Val::Str(&d.name),
                2 => Val::Long(a.core_boot_ms.into()),
                3 => Val::Long(a.total_boot_ms.into()),
                4 => Val::Long(a.gp_logon_ms.into()),
                5 => Val::Long(a.desktop_usable_ms.into()),
                6 => Val::Long(a.apps.len() as i64),
                _ => Val::Null,
            },
            Source::App(d, a) => match i {
                0 => Val::Long(d.resource_id),
                1 => Val::Str(&d.name),
                2 => Val::Str(&a.name),
                3 => Val::Long(a.usage_minutes.into()),
                4 => Val::Long(a.daily_crashes.iter().map(|&c| i64::from(c)).sum()),
                _ => Val::Null,
            },
        }
    }
}

/// Calls `f` with every row `entity` has for `device`, until `f` returns `false`.
pub(crate) fn for_each_row<'d>(
    entity: Entity,
    device: &'d Device,
    mut f: impl FnMut(Source<'d>) -> bool,
) {
    match entity {
        Entity::Device => {
            f(Source::Device(device));
        }
        Entity::DefenderState => {
            if let Some(s) = &device.defender {
                f(Source::Defender(device, s));
            }
        }
        Entity::DefenderDetection => {
            if let Some(s) = &device.defender {
                for x in &s.detections {
                    if !f(Source::Detection(device, x)) {
                        break;
                    }
                }
            }
        }
        Entity::Analytics => {
            if let Some(a) = &device.analytics {
                f(Source::Analytics(device, a));
            }
        }
        Entity::AnalyticsApp => {
            if let Some(a) = &device.analytics {
                for app in &a.apps {
                    if !f(Source::App(device, app)) {
                        break;
                    }
                }
            }
        }
    }
}

/// A value kept in a row after the streaming part of a query (owned, hashable, ordered: null
/// sorts first, then by value; a column only ever holds one type besides null).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    Long(i64),
    Str(Box<str>),
}

impl Cell {
    pub(crate) fn from_val(v: Val<'_>) -> Cell {
        match v {
            Val::Null => Cell::Null,
            Val::Bool(b) => Cell::Bool(b),
            Val::Long(n) => Cell::Long(n),
            // Rows never hold reals (no column is one); kept for completeness.
            Val::Real(r) => Cell::Long(r as i64),
            Val::Str(s) => Cell::Str(s.into()),
        }
    }

    pub(crate) fn as_val(&self) -> Val<'_> {
        match self {
            Cell::Null => Val::Null,
            Cell::Bool(b) => Val::Bool(*b),
            Cell::Long(n) => Val::Long(*n),
            Cell::Str(s) => Val::Str(s),
        }
    }

    pub(crate) fn into_json(self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::Bool(b) => b.into(),
            Cell::Long(n) => n.into(),
            Cell::Str(s) => serde_json::Value::String(s.into()),
        }
    }
}

impl Row for [Cell] {
    fn get(&self, i: usize) -> Val<'_> {
        self[i].as_val()
    }
}

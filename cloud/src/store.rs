//! Storage: the [`Store`] trait the service talks to and its SQLite implementation.
//!
//! Every method is synchronous and short; the HTTP layer calls them on the blocking thread pool.
//! A PostgreSQL backend implements the same trait (see docs/cloud-api.md, "Storage").

use cloudattach_model::actions::{
    ActionAnswer, ActionDecl, ActionDoc, ActionError, ActionStatus, ConnectorBeat,
};
use cloudattach_model::comanagement::EligibilityClass;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Records of a dependent channel name devices that were not uploaded to the hierarchy.
    #[error("records reference devices not uploaded to this hierarchy: {0:?}")]
    MissingDevices(Vec<String>),
    /// A unique key is already taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller may not change the object (e.g. another app's hierarchy).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Stored data is unreadable.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The hierarchy no longer exists (offboarded while the request ran).
    #[error("hierarchy not found: {0}")]
    HierarchyGone(String),
    /// The channel's feature is not enabled (disabled while the request ran).
    #[error("feature not enabled: {0}")]
    FeatureNotEnabled(String),
    /// The database was written by a newer version of the service: its schema is unknown here.
    #[error(
        "{path} has schema version {found}, written by a newer cloudattach; this build knows schema versions up to {known}. \
         Use a cloudattach at least as new as the one that wrote it, or another --data directory"
    )]
    NewerSchema {
        /// The database file.
        path: String,
        /// The database's `user_version`.
        found: i64,
        /// The newest schema version this build knows.
        known: i64,
    },
}

/// A tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Tenant id (UUID).
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Domain names, the first is the default.
    pub domains: Vec<String>,
    /// The tenant-wide "Use Intune RBAC" toggle.
    pub use_intune_rbac: bool,
}

/// A user of a tenant.
#[derive(Debug, Clone)]
pub struct User {
    /// Object id.
    pub id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// User principal name.
    pub upn: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// Directory roles, e.g. "Global Administrator".
    pub roles: Vec<String>,
    /// Whether the user holds an Intune license.
    pub intune_license: bool,
    /// Intune roles, e.g. "Help Desk Operator" (schema v4).
    pub intune_roles: Vec<String>,
}

/// One entry of `requiredResourceAccess` (permission names, not GUIDs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAccess {
    /// The resource: `api://cloudattach` or a Microsoft Graph host.
    pub resource: String,
    /// Permission names, e.g. `CmCollectionData.read`.
    pub permissions: Vec<String>,
}

/// Public metadata of an app secret (never the secret).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMeta {
    /// Key id.
    pub key_id: String,
    /// Display name.
    pub display_name: Option<String>,
    /// First three characters of the secret.
    pub hint: String,
    /// Creation time (RFC 3339).
    pub start_date_time: String,
    /// Expiry (RFC 3339).
    pub end_date_time: String,
}

/// A stored secret hash.
#[derive(Debug, Clone)]
pub struct SecretHash {
    /// Key id.
    pub key_id: String,
    /// Salted SHA-256 (see `auth::hash_secret`).
    pub hash: String,
    /// Expiry (unix seconds).
    pub end_unix: i64,
}

/// An app registration.
#[derive(Debug, Clone)]
pub struct Application {
    /// Object id.
    pub id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// App ID URIs.
    pub identifier_uris: Vec<String>,
    /// Requested permissions.
    pub required_resource_access: Vec<ResourceAccess>,
    /// Whether a Global Administrator granted admin consent.
    pub admin_consent: bool,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Secrets (metadata only).
    pub secrets: Vec<SecretMeta>,
}

/// A service principal.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Object id.
    pub id: String,
    /// Client id of its application.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
}

/// An attached hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Internal row id.
    pub row: i64,
    /// Tenant id.
    pub tenant_id: String,
    /// The hierarchy id (UUID).
    pub hierarchy_id: String,
    /// Site code.
    pub site_code: String,
    /// Site name.
    pub site_name: String,
    /// Site version (YYMM).
    pub site_version: String,
    /// Environment.
    pub environment: String,
    /// The app registered for the hierarchy.
    pub app_id: Option<String>,
    /// Created (RFC 3339).
    pub created: String,
    /// Updated (RFC 3339).
    pub updated: String,
}

/// An onboarding or update of a hierarchy (`PUT /api/v1/hierarchies/{hid}`).
#[derive(Debug, Clone)]
pub struct HierarchyUpsert {
    /// Tenant id.
    pub tenant_id: String,
    /// The hierarchy id (lower-case UUID).
    pub hierarchy_id: String,
    /// Site code.
    pub site_code: String,
    /// Site name; `None` keeps the stored one ("" for a new hierarchy).
    pub site_name: Option<String>,
    /// Site version (YYMM).
    pub site_version: String,
    /// Environment.
    pub environment: String,
    /// The hierarchy's app; `None` keeps the stored one.
    pub app_id: Option<String>,
    /// The calling app (app tokens): it may not change a hierarchy owned by another app that
    /// still exists ([`StoreError::Forbidden`]).
    pub caller_app: Option<String>,
    /// Now (RFC 3339).
    pub now: String,
}

/// A feature enabled on a hierarchy.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Feature id.
    pub feature_id: String,
    /// Settings.
    pub settings: Value,
    /// Enabled at (RFC 3339).
    pub enabled_at: String,
    /// Last settings change (RFC 3339).
    pub updated_at: String,
    /// Last upload (RFC 3339).
    pub last_sync: Option<String>,
}

/// A stored refresh token grant.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    /// Tenant id.
    pub tenant_id: String,
    /// User id.
    pub user_id: String,
    /// Client id.
    pub client_id: String,
    /// Granted scope.
    pub scope: String,
    /// Expiry (unix seconds).
    pub expires: i64,
}

/// The outcome of [`Store::take_refresh`].
#[derive(Debug, Clone)]
pub enum RefreshTake {
    /// No such token (never issued, already used, or removed).
    Missing,
    /// Issued to another client or tenant: left in place.
    Mismatch,
    /// Expired (removed).
    Expired,
    /// Redeemed (removed).
    Taken(RefreshGrant),
}

/// A record ready to store: validated, canonical body, content hash.
#[derive(Debug, Clone)]
pub struct PreparedRecord {
    /// Record key.
    pub key: String,
    /// Content hash of `body`.
    pub hash: i64,
    /// xxh3-64 of the record's JSON bytes exactly as the uploader sent them (what its ledger
    /// holds; the census and the keys list carry it).
    pub sent_hash: i64,
    /// Indexed tag (device name, co-management state).
    pub tag: Option<String>,
    /// Indexed flags ([`FLAG_EA_ELIGIBLE`], [`FLAG_HAS_TELEMETRY`]).
    pub flags: i64,
    /// Canonical JSON body.
    pub body: Vec<u8>,
}

/// What a batch changed: the gateway's answer to an upload.
pub use cloudattach_model::gateway::UploadAnswer as BatchResult;

/// A stored record, as read back.
#[derive(Debug, Clone)]
pub struct RecordRow {
    /// Hierarchy id.
    pub hierarchy_id: String,
    /// Key.
    pub key: String,
    /// Tag.
    pub tag: Option<String>,
    /// Body (JSON).
    pub body: Vec<u8>,
    /// Last change (unix seconds).
    pub updated: i64,
}

/// A record without its body: (hierarchy id, key, tag, flags).
pub type RecordTag = (String, String, Option<String>, i64);

/// Flag bit (devices channel): the device is eligible for Endpoint analytics.
pub const FLAG_EA_ELIGIBLE: i64 = 1;
/// Flag bit (analytics channel): the record carries telemetry (not `"analytics": null`).
pub const FLAG_HAS_TELEMETRY: i64 = 2;
/// Flag bit (defender channel): the device has a Defender health issue (one of the issues of
/// the `unhealthy-endpoints` report).
pub const FLAG_DEFENDER_UNHEALTHY: i64 = 4;
/// Flag bits 4..6 (devices channel): the device's co-management eligibility class, its index in
/// [`EligibilityClass::ALL`] plus one (0: not computed). Device flags use no bit above 6, so
/// that the devices of one class are one range of flags (an index range).
pub const FLAGS_ELIGIBILITY_MASK: i64 = 0b111 << ELIGIBILITY_SHIFT;
const ELIGIBILITY_SHIFT: u32 = 4;

/// The flag bits of a device's eligibility class ([`FLAGS_ELIGIBILITY_MASK`]).
pub fn eligibility_flags(class: EligibilityClass) -> i64 {
    (class.index() as i64 + 1) << ELIGIBILITY_SHIFT
}

/// The eligibility class stored in a device's flags; `None` when not computed.
pub fn eligibility_of_flags(flags: i64) -> Option<EligibilityClass> {
    let i = (flags & FLAGS_ELIGIBILITY_MASK) >> ELIGIBILITY_SHIFT;
    usize::try_from(i - 1)
        .ok()
        .and_then(EligibilityClass::from_index)
}

/// Which co-management records a device must have ([`DeviceQuery::comanagement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComanagementFilter {
    /// A `comanagement` record in this state.
    State(cloudattach_model::rules::ComanagementState),
    /// No `comanagement` record.
    None,
}

/// Which Defender record a device must have ([`DeviceQuery::defender`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefenderFilter {
    /// A `defender` record without [`FLAG_DEFENDER_UNHEALTHY`].
    Healthy,
    /// A `defender` record with [`FLAG_DEFENDER_UNHEALTHY`].
    Unhealthy,
    /// No `defender` record.
    Unreported,
}

/// The order of a device page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSort {
    /// Hierarchy, then key (as text).
    #[default]
    Default,
    /// Name, case-insensitively (ASCII), then hierarchy and key.
    Name,
    /// Last upload time, then hierarchy and key.
    LastUploaded,
    /// Resource id, numerically, then hierarchy.
    ResourceId,
}

/// What [`Store::device_page`] lists: filters (all of them apply), order and page.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// One hierarchy (its id, any case).
    pub hierarchy_id: Option<String>,
    /// A name prefix, case-insensitive (ASCII letters).
    pub name: Option<String>,
    /// Co-management state.
    pub comanagement: Option<ComanagementFilter>,
    /// Co-management eligibility class (as stored in the device's flags).
    pub eligibility: Option<EligibilityClass>,
    /// Defender health.
    pub defender: Option<DefenderFilter>,
    /// The order.
    pub sort: DeviceSort,
    /// Descending (not for [`DeviceSort::Default`]).
    pub desc: bool,
    /// Devices to skip.
    pub skip: u64,
    /// Devices to return at most.
    pub top: u64,
}

/// A device of a page, with what the list shows of its other channels.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// The device record.
    pub record: RecordRow,
    /// Its flags.
    pub flags: i64,
    /// The state of its `comanagement` record, if it has one.
    pub comanagement_state: Option<String>,
    /// The flags of its `defender` record, if it has one.
    pub defender_flags: Option<i64>,
}

/// An asked action as stored: its document and what only the cloud needs.
#[derive(Debug, Clone)]
pub struct StoredAction {
    /// The document (`GET /api/v1/actions/{id}`).
    pub doc: ActionDoc,
    /// The hierarchy's row.
    pub hrow: i64,
    /// The app that owns the hierarchy (the only one whose connector may take and answer it).
    pub owner_app: Option<String>,
    /// The connector process that took it last.
    pub connector_id: Option<String>,
    /// When it was taken last (RFC 3339).
    pub taken: Option<String>,
    /// The connector process whose answer was recorded.
    pub answered_by: Option<String>,
}

/// An action to queue.
#[derive(Debug, Clone)]
pub struct NewAction {
    /// Its document (status `pending` or `unauthorized`).
    pub doc: ActionDoc,
    /// The hierarchy's row.
    pub hrow: i64,
    /// When it times out (unix milliseconds).
    pub deadline_ms: i64,
}

/// Which actions [`Store::actions`] lists.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// One hierarchy.
    pub hierarchy_id: Option<String>,
    /// One device.
    pub resource_id: Option<i64>,
    /// One status (`pending`, `timedOut`, …).
    pub status: Option<String>,
    /// Only hierarchies this app owns (an app caller).
    pub owner_app: Option<String>,
}

/// The outcome of [`Store::answer_action`].
#[derive(Debug, Clone)]
pub enum AnswerOutcome {
    /// The answer was recorded (it was the first).
    Recorded(StoredAction),
    /// The action was over already (answered, refused, failed or timed out): nothing changed.
    Final(StoredAction),
    /// No such action in the tenant.
    Missing,
    /// The action is open but was never handed to the answering connector: nothing changed.
    NotTaken(StoredAction),
}

/// The last heartbeat of a hierarchy's connector.
#[derive(Debug, Clone, Default)]
pub struct ConnectorRow {
    /// The connector process.
    pub connector_id: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Its delta upload interval.
    pub interval_secs: Option<u64>,
    /// Its last delta upload (RFC 3339).
    pub last_upload: Option<String>,
    /// Its last delta upload's failure.
    pub last_error: Option<String>,
    /// Its last heartbeat or poll (unix seconds).
    pub last_heartbeat: Option<i64>,
}

/// The storage interface of the service.
pub trait Store: Send + Sync + 'static {
    /// Whether the store holds no tenant (a fresh data dir).
    fn is_empty(&self) -> Result<bool, StoreError>;
    /// Creates a tenant with its domains.
    fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError>;
    /// Finds a tenant by id or domain name (case-insensitive).
    fn find_tenant(&self, id_or_domain: &str) -> Result<Option<Tenant>, StoreError>;
    /// All tenants.
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Sets the "Use Intune RBAC" toggle.
    fn set_use_intune_rbac(&self, tenant_id: &str, on: bool) -> Result<(), StoreError>;
    /// Creates a user.
    fn create_user(&self, u: &User) -> Result<(), StoreError>;
    /// Finds a user by UPN.
    fn user_by_upn(&self, upn: &str) -> Result<Option<User>, StoreError>;
    /// Finds a user by object id within a tenant.
    fn user_by_id(&self, tenant_id: &str, id: &str) -> Result<Option<User>, StoreError>;
    /// Creates an app registration.
    fn create_application(&self, a: &Application) -> Result<(), StoreError>;
    /// Updates name, URIs and permissions of an app.
    fn update_application(&self, a: &Application) -> Result<(), StoreError>;
    /// Deletes an app, its secrets and service principal.
    fn delete_application(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError>;
    /// Finds an app by object id.
    fn application(&self, tenant_id: &str, id: &str) -> Result<Option<Application>, StoreError>;
    /// Finds an app by client id.
    fn application_by_app_id(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<Application>, StoreError>;
    /// All apps of a tenant.
    fn applications(&self, tenant_id: &str) -> Result<Vec<Application>, StoreError>;
    /// Sets admin consent.
    fn set_admin_consent(&self, tenant_id: &str, id: &str, on: bool) -> Result<(), StoreError>;
    /// Stores a secret hash.
    fn add_secret(
        &self,
        app_object_id: &str,
        meta: &SecretMeta,
        hash: &str,
    ) -> Result<(), StoreError>;
    /// Removes a secret.
    fn remove_secret(&self, app_object_id: &str, key_id: &str) -> Result<bool, StoreError>;
    /// Secret hashes of an app (by client id).
    fn secret_hashes(&self, tenant_id: &str, app_id: &str) -> Result<Vec<SecretHash>, StoreError>;
    /// Creates a service principal.
    fn create_service_principal(
        &self,
        tenant_id: &str,
        sp: &ServicePrincipal,
    ) -> Result<(), StoreError>;
    /// Service principals of a tenant, optionally one app's.
    fn service_principals(
        &self,
        tenant_id: &str,
        app_id: Option<&str>,
    ) -> Result<Vec<ServicePrincipal>, StoreError>;
    /// Stores a refresh token (by hash).
    fn put_refresh(&self, hash: &str, g: &RefreshGrant) -> Result<(), StoreError>;
    /// Redeems a refresh token (rotation): removes and returns it only when it was issued to
    /// `client_id` in `tenant_id` and has not expired; a token presented elsewhere stays valid.
    fn take_refresh(
        &self,
        hash: &str,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<RefreshTake, StoreError>;
    /// Creates or updates a hierarchy in one transaction (ownership checked inside it); returns
    /// it and whether it was created.
    fn upsert_hierarchy(&self, u: &HierarchyUpsert) -> Result<(Hierarchy, bool), StoreError>;
    /// Finds a hierarchy of a tenant.
    fn hierarchy(
        &self,
        tenant_id: &str,
        hierarchy_id: &str,
    ) -> Result<Option<Hierarchy>, StoreError>;
    /// All hierarchies of a tenant.
    fn hierarchies(&self, tenant_id: &str) -> Result<Vec<Hierarchy>, StoreError>;
    /// Removes a hierarchy with its features and records.
    fn delete_hierarchy(&self, row: i64) -> Result<(), StoreError>;
    /// Features of a hierarchy.
    fn features(&self, row: i64) -> Result<Vec<Feature>, StoreError>;
    /// Enables or updates a feature; returns true when it was newly enabled.
    fn put_feature(
        &self,
        row: i64,
        feature_id: &str,
        settings: &Value,
        now: &str,
    ) -> Result<bool, StoreError>;
    /// Disables a feature and removes the records of `channels`.
    fn delete_feature(
        &self,
        row: i64,
        feature_id: &str,
        channels: &[String],
    ) -> Result<bool, StoreError>;
    /// Applies an upload batch atomically. Inside its transaction it checks that hierarchy `row`
    /// still exists in `tenant_id` and that `feature_id` is still enabled on it
    /// ([`StoreError::HierarchyGone`], [`StoreError::FeatureNotEnabled`]; nothing is written).
    #[allow(clippy::too_many_arguments)]
    fn apply_batch(
        &self,
        tenant_id: &str,
        row: i64,
        channel: &str,
        feature_id: &str,
        upserts: &[PreparedRecord],
        deletes: &[String],
        require_devices: bool,
        cascade_channels: &[&str],
        now: &str,
    ) -> Result<BatchResult, StoreError>;
    /// Record count of a channel of a hierarchy.
    fn count(&self, row: i64, channel: &str) -> Result<u64, StoreError>;
    /// The digest of the keys a channel of a hierarchy holds and the sent hashes of their
    /// records (what the client compares with its ledger before a delta).
    fn channel_digest(
        &self,
        row: i64,
        channel: &str,
    ) -> Result<cloudattach_model::gateway::KeyDigest, StoreError>;
    /// Up to `limit` records of a channel (key and sent hash), in byte order of their keys,
    /// after `after`.
    fn channel_keys(
        &self,
        row: i64,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<cloudattach_model::gateway::HeldRecord>, StoreError>;
    /// Record count of a channel with a tag.
    fn count_tag(&self, row: i64, channel: &str, tag: &str) -> Result<u64, StoreError>;
    /// Record count of a channel with a flag bit set.
    fn count_flag(&self, row: i64, channel: &str, flag: i64) -> Result<u64, StoreError>;
    /// Records of one channel for a tenant, optionally one hierarchy.
    fn records(
        &self,
        tenant_id: &str,
        channel: &str,
        hierarchy_id: Option<&str>,
    ) -> Result<Vec<RecordRow>, StoreError>;
    /// The (hierarchy id, key, tag, flags) of every record of a tenant's channel, without the
    /// bodies: what a report needs to join on (device names, indexed flags), at a fraction of
    /// [`Store::records`]' cost.
    fn record_tags(
        &self,
        tenant_id: &str,
        channel: &str,
        hierarchy_id: Option<&str>,
    ) -> Result<Vec<RecordTag>, StoreError>;
    /// One record of a hierarchy's channel, by key.
    fn record(&self, row: i64, channel: &str, key: &str) -> Result<Option<RecordRow>, StoreError>;
    /// A page of a tenant's devices that match every filter of `q`, in its order, and how many
    /// match.
    fn device_page(
        &self,
        tenant_id: &str,
        q: &DeviceQuery,
    ) -> Result<(Vec<DeviceRow>, u64), StoreError>;
    /// Whether a channel of a hierarchy holds a key.
    fn has_record(&self, row: i64, channel: &str, key: &str) -> Result<bool, StoreError>;
    /// The users of a tenant, by UPN.
    fn users(&self, tenant_id: &str) -> Result<Vec<User>, StoreError>;
    /// Replaces a user's Intune roles; false when the user is not in the tenant.
    fn set_intune_roles(
        &self,
        tenant_id: &str,
        user_id: &str,
        roles: &[String],
    ) -> Result<bool, StoreError>;
    /// Replaces the actions a feature of a hierarchy declares, in one transaction that checks
    /// the hierarchy ([`StoreError::HierarchyGone`]), the feature
    /// ([`StoreError::FeatureNotEnabled`]) and that no other feature of the hierarchy declares
    /// one of the ids ([`StoreError::Conflict`], naming it).
    fn put_declared_actions(
        &self,
        row: i64,
        feature_id: &str,
        decls: &[ActionDecl],
    ) -> Result<(), StoreError>;
    /// The declared actions of a hierarchy with their features, by feature then declaration.
    fn declared_actions(&self, row: i64) -> Result<Vec<(String, ActionDecl)>, StoreError>;
    /// Queues an action (or records a refused one), checking in its transaction that its
    /// feature still declares it ([`StoreError::FeatureNotEnabled`]).
    fn insert_action(&self, a: &NewAction) -> Result<(), StoreError>;
    /// One action of a tenant (timeouts applied first).
    fn action(&self, tenant_id: &str, id: &str) -> Result<Option<StoredAction>, StoreError>;
    /// The actions of a tenant, newest first (timeouts applied first).
    fn actions(
        &self,
        tenant_id: &str,
        filter: &ActionFilter,
    ) -> Result<Vec<StoredAction>, StoreError>;
    /// The connector's poll, in one transaction: applies timeouts, records the poll as a
    /// heartbeat, and takes (marks `running`, taken by `connector_id`) up to `limit` actions of
    /// the hierarchy, oldest first: the `pending` ones and the `running` ones this connector
    /// was never given.
    fn take_actions(
        &self,
        row: i64,
        connector_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredAction>, StoreError>;
    /// Records a connector's answer if the action is still `pending` or `running` after
    /// timeouts were applied (the first answer wins; one conditional UPDATE).
    fn answer_action(
        &self,
        tenant_id: &str,
        id: &str,
        answer: &ActionAnswer,
        now_ms: i64,
    ) -> Result<AnswerOutcome, StoreError>;
    /// Times out every `pending` or `running` action whose deadline passed; returns how many.
    fn expire_actions(&self, now_ms: i64) -> Result<usize, StoreError>;
    /// Records a connector's heartbeat.
    fn put_connector_beat(
        &self,
        row: i64,
        beat: &ConnectorBeat,
        now_unix: i64,
    ) -> Result<(), StoreError>;
    /// The last heartbeat of a hierarchy's connector.
    fn connector(&self, row: i64) -> Result<Option<ConnectorRow>, StoreError>;
}

const MIGRATIONS: &[&str] = &[
    // v1: identity, gateway, records.
    r#"
CREATE TABLE tenants(
  id TEXT PRIMARY KEY,
  display_name TEXT NOT NULL,
  use_intune_rbac INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE tenant_domains(
  domain TEXT PRIMARY KEY COLLATE NOCASE,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  position INTEGER NOT NULL
);
CREATE TABLE users(
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  upn TEXT NOT NULL UNIQUE COLLATE NOCASE,
  password_hash TEXT NOT NULL,
  roles TEXT NOT NULL,
  intune_license INTEGER NOT NULL
);
CREATE TABLE applications(
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  app_id TEXT NOT NULL,
  display_name TEXT NOT NULL,
  identifier_uris TEXT NOT NULL,
  required_resource_access TEXT NOT NULL,
  admin_consent INTEGER NOT NULL DEFAULT 0,
  created TEXT NOT NULL,
  UNIQUE(tenant_id, app_id)
);
CREATE TABLE app_secrets(
  key_id TEXT PRIMARY KEY,
  application_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
  display_name TEXT,
  hint TEXT NOT NULL,
  hash TEXT NOT NULL,
  start_time TEXT NOT NULL,
  end_time TEXT NOT NULL
);
CREATE TABLE service_principals(
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  app_id TEXT NOT NULL,
  display_name TEXT NOT NULL,
  UNIQUE(tenant_id, app_id)
);
CREATE TABLE refresh_tokens(
  hash TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  scope TEXT NOT NULL,
  expires INTEGER NOT NULL
);
CREATE TABLE hierarchies(
  row INTEGER PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  hierarchy_id TEXT NOT NULL,
  site_code TEXT NOT NULL,
  site_name TEXT NOT NULL,
  site_version TEXT NOT NULL,
  environment TEXT NOT NULL,
  app_id TEXT,
  created TEXT NOT NULL,
  updated TEXT NOT NULL,
  UNIQUE(tenant_id, hierarchy_id)
);
CREATE TABLE features(
  hrow INTEGER NOT NULL REFERENCES hierarchies(row) ON DELETE CASCADE,
  feature_id TEXT NOT NULL,
  settings TEXT NOT NULL,
  enabled_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  last_sync TEXT,
  PRIMARY KEY(hrow, feature_id)
);
CREATE TABLE records(
  hrow INTEGER NOT NULL,
  channel TEXT NOT NULL,
  key TEXT NOT NULL,
  hash INTEGER NOT NULL,
  tag TEXT,
  flags INTEGER NOT NULL DEFAULT 0,
  updated INTEGER NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY(hrow, channel, key)
) WITHOUT ROWID;
"#,
    // v2: hierarchy row ids are never reused (AUTOINCREMENT: `records.hrow` has no foreign key,
    // so a reused row would hand one tenant's leftover records to another tenant's new
    // hierarchy), and records left behind by an upload that raced an offboard or a feature
    // DELETE are removed. Runs with foreign_keys off (see `init`), so that dropping the old table
    // does not cascade to `features`.
    r#"
CREATE TABLE hierarchies_v2(
  row INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  hierarchy_id TEXT NOT NULL,
  site_code TEXT NOT NULL,
  site_name TEXT NOT NULL,
  site_version TEXT NOT NULL,
  environment TEXT NOT NULL,
  app_id TEXT,
  created TEXT NOT NULL,
  updated TEXT NOT NULL,
  UNIQUE(tenant_id, hierarchy_id)
);
INSERT INTO hierarchies_v2(row, tenant_id, hierarchy_id, site_code, site_name, site_version,
  environment, app_id, created, updated)
  SELECT row, tenant_id, hierarchy_id, site_code, site_name, site_version, environment, app_id,
  created, updated FROM hierarchies;
DROP TABLE hierarchies;
ALTER TABLE hierarchies_v2 RENAME TO hierarchies;
DELETE FROM features WHERE hrow NOT IN (SELECT row FROM hierarchies);
DELETE FROM records WHERE hrow NOT IN (SELECT row FROM hierarchies);
DELETE FROM records WHERE NOT EXISTS (
  SELECT 1 FROM features f WHERE f.hrow = records.hrow AND f.feature_id = CASE
    WHEN records.channel = 'devices' THEN 'tenant-attach'
    WHEN records.channel = 'analytics' THEN 'endpoint-analytics'
    WHEN records.channel = 'defender' THEN 'defender-reporting'
    WHEN records.channel = 'comanagement' THEN 'co-management'
    WHEN records.channel LIKE 'ext:%' THEN substr(records.channel, 5)
    ELSE NULL END);
"#,
    // v3: each record's sent hash (xxh3-64 of its JSON bytes exactly as uploaded), so that the
    // census covers contents and not only keys. Rows stored before have none (NULL: unknown);
    // the census counts them as unknown, which makes the client reconcile once and resend them.
    r#"
ALTER TABLE records ADD COLUMN sent_hash INTEGER;
"#,
    // v4: cloud actions. Users' Intune roles; the actions each enabled feature declares; the
    // queue of asked actions (one row each, its document as columns, so that the first answer
    // wins with one conditional UPDATE); the last heartbeat of each hierarchy's connector.
    r#"
ALTER TABLE users ADD COLUMN intune_roles TEXT NOT NULL DEFAULT '[]';
CREATE TABLE declared_actions(
  hrow INTEGER NOT NULL REFERENCES hierarchies(row) ON DELETE CASCADE,
  action_id TEXT NOT NULL,
  feature_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  decl TEXT NOT NULL,
  PRIMARY KEY(hrow, action_id)
);
CREATE TABLE actions(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant_id TEXT NOT NULL,
  hrow INTEGER NOT NULL REFERENCES hierarchies(row) ON DELETE CASCADE,
  hierarchy_id TEXT NOT NULL,
  action TEXT NOT NULL,
  feature TEXT NOT NULL,
  resource_id INTEGER,
  collection_id TEXT,
  parameters TEXT NOT NULL,
  requested_by TEXT NOT NULL,
  requested_by_id TEXT NOT NULL,
  status TEXT NOT NULL,
  authority TEXT,
  use_intune_rbac INTEGER NOT NULL,
  result TEXT,
  error_code TEXT,
  error_message TEXT,
  created TEXT NOT NULL,
  completed TEXT,
  timeout_secs INTEGER NOT NULL,
  deadline_ms INTEGER NOT NULL,
  connector_id TEXT,
  taken TEXT,
  delivered_to TEXT NOT NULL DEFAULT '[]',
  answered_by TEXT
);
CREATE INDEX actions_queue ON actions(hrow, status, seq);
CREATE INDEX actions_deadline ON actions(status, deadline_ms);
CREATE INDEX actions_tenant ON actions(tenant_id, seq);
CREATE TABLE connectors(
  hrow INTEGER PRIMARY KEY REFERENCES hierarchies(row) ON DELETE CASCADE,
  connector_id TEXT,
  version TEXT,
  interval_secs INTEGER,
  last_upload TEXT,
  last_error TEXT,
  last_heartbeat INTEGER
);
"#,
    // v5: the device list's filters and orders. Names (and co-management states) by prefix and
    // in order, case-insensitively as LIKE compares; flags (eligibility class, Defender health);
    // devices by resource id (numerically) and by upload time. The flags of the rows stored
    // before are filled by `fill_v5_flags`, in the same transaction.
    r#"
CREATE INDEX records_tag_nocase ON records(hrow, channel, tag COLLATE NOCASE);
CREATE INDEX records_flags ON records(hrow, channel, flags);
CREATE INDEX records_device_rid ON records(hrow, CAST(key AS INTEGER)) WHERE channel = 'devices';
CREATE INDEX records_device_updated ON records(hrow, updated, key) WHERE channel = 'devices';
"#,
];

/// The schema version whose migration [`fill_v5_flags`] completes.
const V5_DEVICE_FILTERS: i64 = 5;

/// The step in Rust of a migration (after its SQL, in its transaction), if it has one.
fn migration_step(version: i64, conn: &Connection) -> Result<(), StoreError> {
    if version == V5_DEVICE_FILTERS {
        fill_v5_flags(conn)?;
    }
    Ok(())
}

/// Fills the flags v5 added for the rows stored before: each device's eligibility class (from
/// its stored record) and each Defender record's health. A body that does not parse keeps its
/// flags (class 0: not computed).
fn fill_v5_flags(conn: &Connection) -> Result<(), StoreError> {
    use cloudattach_model::rules::DefenderRecord;
    let mut update = conn
        .prepare("UPDATE records SET flags = ?4 WHERE hrow = ?1 AND channel = ?2 AND key = ?3")?;
    // In chunks of keys, each read to its end before it is updated: memory stays flat however
    // many rows there are, and no row is updated under an open cursor.
    let mut read = conn.prepare(
        "SELECT key, flags, body FROM records WHERE hrow = ?1 AND channel = ?2 AND key > ?3 \
         ORDER BY key LIMIT 10000",
    )?;
    let hrows: Vec<i64> = conn
        .prepare("SELECT DISTINCT hrow FROM records")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for hrow in hrows {
        for channel in ["devices", "defender"] {
            let mut after = String::new();
            loop {
                let chunk: Vec<(String, i64, Vec<u8>)> = read
                    .query_map(params![hrow, channel, after], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<Result<_, _>>()?;
                let Some(last) = chunk.last() else { break };
                after = last.0.clone();
                for (key, flags, body) in chunk {
                    let new = if channel == "devices" {
                        serde_json::from_slice::<cloudattach_model::Device>(&body)
                            .ok()
                            .map(|d| {
                                (flags & !FLAGS_ELIGIBILITY_MASK)
                                    | (crate::ingest::device_flags(&d) & FLAGS_ELIGIBILITY_MASK)
                            })
                    } else {
                        serde_json::from_slice::<DefenderRecord>(&body)
                            .ok()
                            .map(|d| {
                                (flags & !FLAG_DEFENDER_UNHEALTHY)
                                    | crate::ingest::defender_flags(&d.defender)
                            })
                    };
                    if let Some(new) = new.filter(|n| *n != flags) {
                        update.execute(params![hrow, channel, key, new])?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The SQLite store (WAL, one connection guarded by a mutex, WAL checkpoints on a background
/// thread so that ingest does not pay for them).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    _checkpointer: Option<std::sync::mpsc::Sender<()>>,
}

/// Pages the writer lets the WAL grow to before it checkpoints itself (a safety net: the
/// background checkpointer normally keeps it far smaller).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

fn spawn_checkpointer(path: std::path::PathBuf) -> Option<std::sync::mpsc::Sender<()>> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let conn = Connection::open(&path).ok()?;
    conn.execute_batch("PRAGMA busy_timeout=1000;").ok()?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(std::time::Duration::from_millis(500))
            {
                if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::debug!(error = %e, "background checkpoint failed");
                }
            }
        })
        .ok()?;
    Some(tx)
}

/// Creates `dir` (and its parents) if needed; on Unix the data dir itself is made owner-only
/// (0700), also when it already existed.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates the database file owner-only (0600) and tightens it and its WAL files if they exist.
fn make_private_files(db: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(db)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// Refuses a database whose schema is newer than [`MIGRATIONS`]: this build would misread it.
fn check_schema_version(path: &Path, found: i64) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::NewerSchema {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    Ok(())
}

/// A stored sent hash; a row stored before sent hashes were recorded has none: unknown.
fn sent_hash(stored: Option<i64>) -> u64 {
    stored.map_or(cloudattach_model::gateway::UNKNOWN_SENT_HASH, |h| h as u64)
}

fn json_vec(s: String) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/cloud.db` and runs pending migrations. On Unix the
    /// database and its `-wal`/`-shm` files are owner-only (0600): SQLite gives the WAL files the
    /// mode of the database, which is created (or tightened) here first.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join("cloud.db");
        Self::refuse_newer(dir)?;
        make_private_files(&path)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(&path)?;
        let mut s = Self::init(conn)?;
        s.lock().execute_batch(&format!(
            "PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES};"
        ))?;
        s._checkpointer = spawn_checkpointer(path);
        Ok(s)
    }

    /// Refuses a data dir whose `cloud.db` was written by a newer version
    /// ([`StoreError::NewerSchema`]). Read-only: it runs before anything touches the data dir
    /// (permissions, journal mode, migrations), so a refused data dir is left as it was.
    pub fn refuse_newer(dir: &Path) -> Result<(), StoreError> {
        let path = dir.join("cloud.db");
        if !path.is_file() {
            return Ok(());
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let found = if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            // The WAL may hold a newer first page than the file: ask SQLite (its -wal and -shm
            // files exist already, so a read-only connection creates nothing).
            let ro =
                Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            ro.query_row("PRAGMA user_version", [], |r| r.get(0))?
        } else {
            // A read-only connection would create the -wal and -shm files, so the version is read
            // from the database header (bytes 60..64, big-endian).
            use std::io::Read;
            let mut header = [0u8; 64];
            let mut f = std::fs::File::open(&path)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
            match f.read_exact(&mut header) {
                Ok(()) => i64::from(i32::from_be_bytes([
                    header[60], header[61], header[62], header[63],
                ])),
                // Shorter than a header: an empty database, created but never written.
                Err(_) => 0,
            }
        };
        check_schema_version(&path, found)
    }

    /// An in-memory store (benchmarks and unit tests).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        // Foreign keys stay off while migrations run (a table rebuild must not cascade), and are
        // checked before they are switched on.
        conn.execute_batch(
            "PRAGMA page_size=8192; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
             PRAGMA foreign_keys=OFF; PRAGMA busy_timeout=5000; PRAGMA cache_size=-65536; \
             PRAGMA temp_store=MEMORY;",
        )?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        check_schema_version(Path::new(conn.path().unwrap_or("cloud.db")), version)?;
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let v = i as i64 + 1;
            if v > version {
                let r = conn
                    .execute_batch(&format!("BEGIN; {m};"))
                    .map_err(StoreError::from)
                    .and_then(|()| migration_step(v, &conn))
                    .and_then(|()| {
                        Ok(conn.execute_batch(&format!("PRAGMA user_version={v}; COMMIT;"))?)
                    });
                if let Err(e) = r {
                    let _ = conn.execute_batch("ROLLBACK;");
                    return Err(e);
                }
            }
        }
        let broken = conn.prepare("PRAGMA foreign_key_check")?.exists([])?;
        if broken {
            tracing::warn!("the database has rows that violate foreign keys");
        }
        conn.execute_batch("PRAGMA foreign_keys=ON;")?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            _checkpointer: None,
        })
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tenant_row(conn: &Connection, id: &str) -> Result<Option<Tenant>, StoreError> {
        let t = conn
            .query_row(
                "SELECT id, display_name, use_intune_rbac FROM tenants WHERE id = ?1",
                [id],
                |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        display_name: r.get(1)?,
                        domains: vec![],
                        use_intune_rbac: r.get(2)?,
                    })
                },
            )
            .optional()?;
        let Some(mut t) = t else { return Ok(None) };
        let mut st = conn.prepare_cached(
            "SELECT domain FROM tenant_domains WHERE tenant_id = ?1 ORDER BY position",
        )?;
        t.domains = st
            .query_map([id], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(t))
    }

    fn app_from_row(conn: &Connection, r: AppRow) -> Result<Application, StoreError> {
        let mut st = conn.prepare_cached(
            "SELECT key_id, display_name, hint, start_time, end_time FROM app_secrets \
             WHERE application_id = ?1 ORDER BY start_time, key_id",
        )?;
        let secrets = st
            .query_map([&r.id], |x| {
                Ok(SecretMeta {
                    key_id: x.get(0)?,
                    display_name: x.get(1)?,
                    hint: x.get(2)?,
                    start_date_time: x.get(3)?,
                    end_date_time: x.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Application {
            id: r.id,
            tenant_id: r.tenant_id,
            app_id: r.app_id,
            display_name: r.display_name,
            identifier_uris: json_vec(r.uris)?,
            required_resource_access: serde_json::from_str(&r.rra)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            admin_consent: r.consent,
            created: r.created,
            secrets,
        })
    }

    fn apps_where(&self, clause: &str, args: &[&str]) -> Result<Vec<Application>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT id, tenant_id, app_id, display_name, identifier_uris, required_resource_access, \
             admin_consent, created FROM applications WHERE {clause} ORDER BY created, id"
        );
        let rows: Vec<AppRow> = {
            let mut st = conn.prepare_cached(&sql)?;
            st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(AppRow {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    app_id: r.get(2)?,
                    display_name: r.get(3)?,
                    uris: r.get(4)?,
                    rra: r.get(5)?,
                    consent: r.get(6)?,
                    created: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|r| Self::app_from_row(&conn, r))
            .collect()
    }

    fn hierarchies_where(&self, clause: &str, args: &[&str]) -> Result<Vec<Hierarchy>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT row, tenant_id, hierarchy_id, site_code, site_name, site_version, environment, \
             app_id, created, updated FROM hierarchies WHERE {clause} ORDER BY row"
        );
        let mut st = conn.prepare_cached(&sql)?;
        let v = st
            .query_map(rusqlite::params_from_iter(args.iter()), hierarchy_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }
}

fn hierarchy_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Hierarchy> {
    Ok(Hierarchy {
        row: r.get(0)?,
        tenant_id: r.get(1)?,
        hierarchy_id: r.get(2)?,
        site_code: r.get(3)?,
        site_name: r.get(4)?,
        site_version: r.get(5)?,
        environment: r.get(6)?,
        app_id: r.get(7)?,
        created: r.get(8)?,
        updated: r.get(9)?,
    })
}

struct AppRow {
    id: String,
    tenant_id: String,
    app_id: String,
    display_name: String,
    uris: String,
    rra: String,
    consent: bool,
    created: String,
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        hierarchy_id: r.get(0)?,
        key: r.get(1)?,
        tag: r.get(2)?,
        body: r.get(3)?,
        updated: r.get(4)?,
    })
}

impl Store for SqliteStore {
    fn is_empty(&self) -> Result<bool, StoreError> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get(0))?;
        Ok(n == 0)
    }

    fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO tenants(id, display_name, use_intune_rbac) VALUES(?1, ?2, ?3)",
            params![t.id, t.display_name, t.use_intune_rbac],
        )?;
        for (i, d) in t.domains.iter().enumerate() {
            tx.execute(
                "INSERT INTO tenant_domains(domain, tenant_id, position) VALUES(?1, ?2, ?3)",
                params![d, t.id, i as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn find_tenant(&self, id_or_domain: &str) -> Result<Option<Tenant>, StoreError> {
        let conn = self.lock();
        let id: Option<String> = conn
            .query_row(
                "SELECT id FROM tenants WHERE id = lower(?1) \
                 UNION SELECT tenant_id FROM tenant_domains WHERE domain = ?1 LIMIT 1",
                [id_or_domain],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => Self::tenant_row(&conn, &id),
            None => Ok(None),
        }
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let conn = self.lock();
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM tenants ORDER BY rowid")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.iter()
            .filter_map(|id| Self::tenant_row(&conn, id).transpose())
            .collect()
    }

    fn set_use_intune_rbac(&self, tenant_id: &str, on: bool) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE tenants SET use_intune_rbac = ?2 WHERE id = ?1",
            params![tenant_id, on],
        )?;
        Ok(())
    }

    fn create_user(&self, u: &User) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into());
        let intune_roles = serde_json::to_string(&u.intune_roles).unwrap_or_else(|_| "[]".into());
        self.lock()
            .execute(
                "INSERT INTO users(id, tenant_id, upn, password_hash, roles, intune_license, \
                 intune_roles) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    u.id,
                    u.tenant_id,
                    u.upn,
                    u.password_hash,
                    roles,
                    u.intune_license,
                    intune_roles
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("user {} exists", u.upn))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    fn user_by_upn(&self, upn: &str) -> Result<Option<User>, StoreError> {
        self.user_where("upn = ?1", &[upn])
    }

    fn user_by_id(&self, tenant_id: &str, id: &str) -> Result<Option<User>, StoreError> {
        self.user_where("tenant_id = ?1 AND id = ?2", &[tenant_id, id])
    }

    fn create_application(&self, a: &Application) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&a.identifier_uris).unwrap_or_default();
        let rra = serde_json::to_string(&a.required_resource_access).unwrap_or_default();
        self.lock()
            .execute(
                "INSERT INTO applications(id, tenant_id, app_id, display_name, identifier_uris, \
                 required_resource_access, admin_consent, created) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
                params![
                    a.id,
                    a.tenant_id,
                    a.app_id,
                    a.display_name,
                    uris,
                    rra,
                    a.admin_consent,
                    a.created
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("application {} exists", a.app_id))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    fn update_application(&self, a: &Application) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&a.identifier_uris).unwrap_or_default();
        let rra = serde_json::to_string(&a.required_resource_access).unwrap_or_default();
        self.lock().execute(
            "UPDATE applications SET display_name = ?3, identifier_uris = ?4, \
             required_resource_access = ?5, admin_consent = ?6 WHERE tenant_id = ?1 AND id = ?2",
            params![
                a.tenant_id,
                a.id,
                a.display_name,
                uris,
                rra,
                a.admin_consent
            ],
        )?;
        Ok(())
    }

    fn delete_application(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let app_id: Option<String> = tx
            .query_row(
                "SELECT app_id FROM applications WHERE tenant_id = ?1 AND id = ?2",
                [tenant_id, id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(app_id) = app_id else {
            return Ok(false);
        };
        tx.execute(
            "DELETE FROM service_principals WHERE tenant_id = ?1 AND app_id = ?2",
            [tenant_id, &app_id],
        )?;
        tx.execute("DELETE FROM applications WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(true)
    }

    fn application(&self, tenant_id: &str, id: &str) -> Result<Option<Application>, StoreError> {
        Ok(self
            .apps_where("tenant_id = ?1 AND id = ?2", &[tenant_id, id])?
            .pop())
    }

    fn application_by_app_id(
        &self,
        tenant_id: &str,
        app_id: &str,
    ) -> Result<Option<Application>, StoreError> {
        Ok(self
            .apps_where(
                "tenant_id = ?1 AND app_id = lower(?2)",
                &[tenant_id, app_id],
            )?
            .pop())
    }

    fn applications(&self, tenant_id: &str) -> Result<Vec<Application>, StoreError> {
        self.apps_where("tenant_id = ?1", &[tenant_id])
    }

    fn set_admin_consent(&self, tenant_id: &str, id: &str, on: bool) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE applications SET admin_consent = ?3 WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, id, on],
        )?;
        Ok(())
    }

    fn add_secret(
        &self,
        app_object_id: &str,
        m: &SecretMeta,
        hash: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO app_secrets(key_id, application_id, display_name, hint, hash, start_time, end_time) \
             VALUES(?1,?2,?3,?4,?5,?6,?7)",
            params![m.key_id, app_object_id, m.display_name, m.hint, hash, m.start_date_time, m.end_date_time],
        )?;
        Ok(())
    }

    fn remove_secret(&self, app_object_id: &str, key_id: &str) -> Result<bool, StoreError> {
        let n = self.lock().execute(
            "DELETE FROM app_secrets WHERE application_id = ?1 AND key_id = ?2",
            [app_object_id, key_id],
        )?;
        Ok(n > 0)
    }

    fn secret_hashes(&self, tenant_id: &str, app_id: &str) -> Result<Vec<SecretHash>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT s.key_id, s.hash, s.end_time FROM app_secrets s JOIN applications a \
             ON a.id = s.application_id WHERE a.tenant_id = ?1 AND a.app_id = lower(?2)",
        )?;
        let rows: Vec<(String, String, String)> = st
            .query_map([tenant_id, app_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(key_id, hash, end)| {
                let end_unix = crate::util::parse_rfc3339(&end)
                    .ok_or_else(|| StoreError::Corrupt(format!("bad secret expiry {end}")))?;
                Ok(SecretHash {
                    key_id,
                    hash,
                    end_unix,
                })
            })
            .collect()
    }

    fn create_service_principal(
        &self,
        tenant_id: &str,
        sp: &ServicePrincipal,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO service_principals(id, tenant_id, app_id, display_name) VALUES(?1,?2,?3,?4)",
                params![sp.id, tenant_id, sp.app_id, sp.display_name],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!(
                        "a service principal for appId {} already exists",
                        sp.app_id
                    ))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    fn service_principals(
        &self,
        tenant_id: &str,
        app_id: Option<&str>,
    ) -> Result<Vec<ServicePrincipal>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, app_id, display_name FROM service_principals WHERE tenant_id = ?1 \
             AND (?2 IS NULL OR app_id = lower(?2)) ORDER BY rowid",
        )?;
        let v = st
            .query_map(params![tenant_id, app_id], |r| {
                Ok(ServicePrincipal {
                    id: r.get(0)?,
                    app_id: r.get(1)?,
                    display_name: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    fn put_refresh(&self, hash: &str, g: &RefreshGrant) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM refresh_tokens WHERE expires < ?1",
            [crate::util::now_unix()],
        )?;
        conn.execute(
            "INSERT INTO refresh_tokens(hash, tenant_id, user_id, client_id, scope, expires) VALUES(?1,?2,?3,?4,?5,?6)",
            params![hash, g.tenant_id, g.user_id, g.client_id, g.scope, g.expires],
        )?;
        Ok(())
    }

    fn take_refresh(
        &self,
        hash: &str,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<RefreshTake, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let g = tx
            .query_row(
                "SELECT tenant_id, user_id, client_id, scope, expires FROM refresh_tokens WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(RefreshGrant {
                        tenant_id: r.get(0)?,
                        user_id: r.get(1)?,
                        client_id: r.get(2)?,
                        scope: r.get(3)?,
                        expires: r.get(4)?,
                    })
                },
            )
            .optional()?;
        let out = match g {
            None => RefreshTake::Missing,
            Some(g) if g.tenant_id != tenant_id || g.client_id != client_id => {
                RefreshTake::Mismatch
            }
            Some(g) => {
                tx.execute("DELETE FROM refresh_tokens WHERE hash = ?1", [hash])?;
                if g.expires <= crate::util::now_unix() {
                    RefreshTake::Expired
                } else {
                    RefreshTake::Taken(g)
                }
            }
        };
        tx.commit()?;
        Ok(out)
    }

    fn upsert_hierarchy(&self, u: &HierarchyUpsert) -> Result<(Hierarchy, bool), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let owner: Option<Option<String>> = tx
            .query_row(
                "SELECT app_id FROM hierarchies WHERE tenant_id = ?1 AND hierarchy_id = lower(?2)",
                params![u.tenant_id, u.hierarchy_id],
                |r| r.get(0),
            )
            .optional()?;
        if let (Some(me), Some(Some(owner))) = (&u.caller_app, &owner)
            && !me.eq_ignore_ascii_case(owner)
        {
            let owner_exists = tx
                .prepare_cached(
                    "SELECT 1 FROM applications WHERE tenant_id = ?1 AND app_id = lower(?2)",
                )?
                .exists(params![u.tenant_id, owner])?;
            if owner_exists {
                return Err(StoreError::Forbidden(format!(
                    "hierarchy {} is attached with another app",
                    u.hierarchy_id
                )));
            }
        }
        let h = tx.query_row(
            "INSERT INTO hierarchies(tenant_id, hierarchy_id, site_code, site_name, site_version, \
             environment, app_id, created, updated) VALUES(?1, lower(?2), ?3, COALESCE(?4, ''), ?5, ?6, ?7, ?8, ?8) \
             ON CONFLICT(tenant_id, hierarchy_id) DO UPDATE SET site_code = excluded.site_code, \
             site_name = COALESCE(?4, hierarchies.site_name), site_version = excluded.site_version, \
             environment = excluded.environment, app_id = COALESCE(?7, hierarchies.app_id), \
             updated = excluded.updated \
             RETURNING row, tenant_id, hierarchy_id, site_code, site_name, site_version, environment, \
             app_id, created, updated",
            params![
                u.tenant_id,
                u.hierarchy_id,
                u.site_code,
                u.site_name,
                u.site_version,
                u.environment,
                u.app_id,
                u.now
            ],
            hierarchy_from_row,
        )?;
        tx.commit()?;
        Ok((h, owner.is_none()))
    }

    fn hierarchy(
        &self,
        tenant_id: &str,
        hierarchy_id: &str,
    ) -> Result<Option<Hierarchy>, StoreError> {
        Ok(self
            .hierarchies_where(
                "tenant_id = ?1 AND hierarchy_id = lower(?2)",
                &[tenant_id, hierarchy_id],
            )?
            .pop())
    }

    fn hierarchies(&self, tenant_id: &str) -> Result<Vec<Hierarchy>, StoreError> {
        self.hierarchies_where("tenant_id = ?1", &[tenant_id])
    }

    fn delete_hierarchy(&self, row: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM records WHERE hrow = ?1", [row])?;
        tx.execute("DELETE FROM actions WHERE hrow = ?1", [row])?;
        tx.execute("DELETE FROM declared_actions WHERE hrow = ?1", [row])?;
        tx.execute("DELETE FROM connectors WHERE hrow = ?1", [row])?;
        tx.execute("DELETE FROM features WHERE hrow = ?1", [row])?;
        tx.execute("DELETE FROM hierarchies WHERE row = ?1", [row])?;
        tx.commit()?;
        Ok(())
    }

    fn features(&self, row: i64) -> Result<Vec<Feature>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT feature_id, settings, enabled_at, updated_at, last_sync FROM features \
             WHERE hrow = ?1 ORDER BY feature_id",
        )?;
        let rows: Vec<(String, String, String, String, Option<String>)> = st
            .query_map([row], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(feature_id, s, enabled_at, updated_at, last_sync)| {
                Ok(Feature {
                    feature_id,
                    settings: serde_json::from_str(&s)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    enabled_at,
                    updated_at,
                    last_sync,
                })
            })
            .collect()
    }

    fn put_feature(
        &self,
        row: i64,
        feature_id: &str,
        settings: &Value,
        now: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let conn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if !conn
            .prepare_cached("SELECT 1 FROM hierarchies WHERE row = ?1")?
            .exists([row])?
        {
            return Err(StoreError::HierarchyGone(
                "the hierarchy was offboarded while the request ran".into(),
            ));
        }
        let s = settings.to_string();
        let n = conn.execute(
            "UPDATE features SET settings = ?3, updated_at = CASE WHEN settings = ?3 THEN updated_at ELSE ?4 END \
             WHERE hrow = ?1 AND feature_id = ?2",
            params![row, feature_id, s, now],
        )?;
        if n == 0 {
            conn.execute(
                "INSERT INTO features(hrow, feature_id, settings, enabled_at, updated_at) VALUES(?1,?2,?3,?4,?4)",
                params![row, feature_id, s, now],
            )?;
        }
        conn.commit()?;
        Ok(n == 0)
    }

    fn delete_feature(
        &self,
        row: i64,
        feature_id: &str,
        channels: &[String],
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM features WHERE hrow = ?1 AND feature_id = ?2",
            params![row, feature_id],
        )?;
        for c in channels {
            tx.execute(
                "DELETE FROM records WHERE hrow = ?1 AND channel = ?2",
                params![row, c],
            )?;
        }
        // Its declarations go with it, and what it was asked to do and has not answered ends.
        tx.execute(
            "DELETE FROM declared_actions WHERE hrow = ?1 AND feature_id = ?2",
            params![row, feature_id],
        )?;
        tx.execute(
            "UPDATE actions SET status = 'failed', error_code = 'feature-disabled', \
             error_message = ?3, completed = ?4 \
             WHERE hrow = ?1 AND feature = ?2 AND status IN ('pending', 'running')",
            params![
                row,
                feature_id,
                format!("the feature {feature_id} was disabled before the action was answered"),
                crate::util::now_rfc3339()
            ],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn apply_batch(
        &self,
        tenant_id: &str,
        row: i64,
        channel: &str,
        feature_id: &str,
        upserts: &[PreparedRecord],
        deletes: &[String],
        require_devices: bool,
        cascade_channels: &[&str],
        now: &str,
    ) -> Result<BatchResult, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // The handler loaded the hierarchy and its features before reading the body: re-check
        // both here, in the transaction that writes, so that an offboard or a feature DELETE that
        // ran meanwhile can't leave records behind.
        let hierarchy: Option<String> = tx
            .query_row(
                "SELECT hierarchy_id FROM hierarchies WHERE row = ?1 AND tenant_id = ?2",
                params![row, tenant_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(hierarchy) = hierarchy else {
            return Err(StoreError::HierarchyGone(
                "the hierarchy was offboarded while the upload ran; nothing was written".into(),
            ));
        };
        let enabled = tx
            .prepare_cached("SELECT 1 FROM features WHERE hrow = ?1 AND feature_id = ?2")?
            .exists(params![row, feature_id])?;
        if !enabled {
            return Err(StoreError::FeatureNotEnabled(format!(
                "feature {feature_id} is not enabled for hierarchy {hierarchy} (it was disabled while the upload ran); nothing was written"
            )));
        }
        let mut res = BatchResult::default();
        if require_devices && !upserts.is_empty() {
            let mut st = tx.prepare_cached(
                "SELECT 1 FROM records WHERE hrow = ?1 AND channel = 'devices' AND key = ?2",
            )?;
            let mut missing = Vec::new();
            for r in upserts {
                if !st.exists(params![row, r.key])? {
                    missing.push(r.key.clone());
                }
            }
            if !missing.is_empty() {
                return Err(StoreError::MissingDevices(missing));
            }
        }
        let ts = crate::util::now_unix();
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO records(hrow, channel, key, hash, tag, flags, updated, body, sent_hash) \
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT(hrow, channel, key) DO UPDATE SET hash = excluded.hash, tag = excluded.tag, \
                 flags = excluded.flags, updated = excluded.updated, body = excluded.body, \
                 sent_hash = excluded.sent_hash \
                 WHERE records.hash != excluded.hash",
            )?;
            // The same content sent as other bytes (another writer's formatting, a row from
            // before sent hashes): unchanged, but the census must name what was sent last.
            let mut resent = tx.prepare_cached(
                "UPDATE records SET sent_hash = ?4 \
                 WHERE hrow = ?1 AND channel = ?2 AND key = ?3 AND sent_hash IS NOT ?4",
            )?;
            for r in upserts {
                let n = up.execute(params![
                    row,
                    channel,
                    r.key,
                    r.hash,
                    r.tag,
                    r.flags,
                    ts,
                    r.body,
                    r.sent_hash
                ])?;
                if n > 0 {
                    res.upserted += 1;
                } else {
                    resent.execute(params![row, channel, r.key, r.sent_hash])?;
                    res.unchanged += 1;
                }
            }
            let mut del = tx.prepare_cached(
                "DELETE FROM records WHERE hrow = ?1 AND channel = ?2 AND key = ?3",
            )?;
            for k in deletes {
                if del.execute(params![row, channel, k])? > 0 {
                    res.deleted += 1;
                } else {
                    res.unchanged += 1;
                }
                for c in cascade_channels {
                    del.execute(params![row, c, k])?;
                }
            }
        }
        tx.execute(
            "UPDATE features SET last_sync = ?3 WHERE hrow = ?1 AND feature_id = ?2",
            params![row, feature_id, now],
        )?;
        tx.commit()?;
        Ok(res)
    }

    fn count(&self, row: i64, channel: &str) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM records WHERE hrow = ?1 AND channel = ?2",
            params![row, channel],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn channel_digest(
        &self,
        row: i64,
        channel: &str,
    ) -> Result<cloudattach_model::gateway::KeyDigest, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT key, sent_hash FROM records WHERE hrow = ?1 AND channel = ?2",
        )?;
        let mut rows = st.query(params![row, channel])?;
        let mut digest = cloudattach_model::gateway::KeyDigest::default();
        while let Some(r) = rows.next()? {
            digest.add(
                r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?,
                sent_hash(r.get(1)?),
            );
        }
        Ok(digest)
    }

    fn channel_keys(
        &self,
        row: i64,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<cloudattach_model::gateway::HeldRecord>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT key, sent_hash FROM records WHERE hrow = ?1 AND channel = ?2 AND key > ?3 \
             ORDER BY key LIMIT ?4",
        )?;
        let keys = st
            .query_map(
                params![row, channel, after.unwrap_or(""), limit as i64],
                |r| {
                    Ok(cloudattach_model::gateway::HeldRecord::new(
                        r.get::<_, String>(0)?,
                        sent_hash(r.get(1)?),
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    fn count_tag(&self, row: i64, channel: &str, tag: &str) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM records WHERE hrow = ?1 AND channel = ?2 AND tag = ?3",
            params![row, channel, tag],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn count_flag(&self, row: i64, channel: &str, flag: i64) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM records WHERE hrow = ?1 AND channel = ?2 AND (flags & ?3) != 0",
            params![row, channel, flag],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn records(
        &self,
        tenant_id: &str,
        channel: &str,
        hierarchy_id: Option<&str>,
    ) -> Result<Vec<RecordRow>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT h.hierarchy_id, r.key, r.tag, r.body, r.updated FROM records r \
             JOIN hierarchies h ON h.row = r.hrow WHERE h.tenant_id = ?1 AND r.channel = ?2 \
             AND (?3 IS NULL OR h.hierarchy_id = lower(?3)) ORDER BY h.row, r.key",
        )?;
        let v = st
            .query_map(params![tenant_id, channel, hierarchy_id], row_to_record)?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    fn record_tags(
        &self,
        tenant_id: &str,
        channel: &str,
        hierarchy_id: Option<&str>,
    ) -> Result<Vec<RecordTag>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT h.hierarchy_id, r.key, r.tag, r.flags FROM records r \
             JOIN hierarchies h ON h.row = r.hrow WHERE h.tenant_id = ?1 AND r.channel = ?2 \
             AND (?3 IS NULL OR h.hierarchy_id = lower(?3)) ORDER BY h.row, r.key",
        )?;
        let v = st
            .query_map(params![tenant_id, channel, hierarchy_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(v)
    }

    fn record(&self, row: i64, channel: &str, key: &str) -> Result<Option<RecordRow>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT h.hierarchy_id, r.key, r.tag, r.body, r.updated FROM records r \
             JOIN hierarchies h ON h.row = r.hrow WHERE r.hrow = ?1 AND r.channel = ?2 \
             AND r.key = ?3",
        )?;
        Ok(st
            .query_row(params![row, channel, key], row_to_record)
            .optional()?)
    }

    fn device_page(
        &self,
        tenant_id: &str,
        q: &DeviceQuery,
    ) -> Result<(Vec<DeviceRow>, u64), StoreError> {
        let conn = self.lock();
        // The count and the page read one snapshot.
        let tx = conn.unchecked_transaction()?;
        let hierarchies: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT row, hierarchy_id FROM hierarchies WHERE tenant_id = ?1 \
                 AND (?2 IS NULL OR hierarchy_id = lower(?2)) ORDER BY row",
            )?
            .query_map(params![tenant_id, q.hierarchy_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let (Some(first), true) = (hierarchies.first(), q.top > 0) else {
            return Ok((vec![], 0));
        };
        let sql = device_sql(q, hierarchies.len() == 1);
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let scope = if hierarchies.len() == 1 {
            rusqlite::types::Value::Integer(first.0)
        } else {
            rusqlite::types::Value::Text(tenant_id.to_string())
        };
        args.push(scope);
        args.extend(sql.args);
        let total: i64 = match &sql.count {
            Some(count) => tx
                .prepare_cached(count)?
                .query_row([&args[0]], |r| r.get(0))?,
            None => tx
                .prepare_cached(&format!(
                    "SELECT COUNT(*) FROM records r WHERE {}",
                    sql.filter
                ))?
                .query_row(rusqlite::params_from_iter(&args), |r| r.get(0))?,
        };
        args.push(i64::try_from(q.top).unwrap_or(i64::MAX).into());
        args.push(i64::try_from(q.skip).unwrap_or(i64::MAX).into());
        // The page's keys first, from the indexes alone; then each device with what the list
        // shows of its other channels.
        let keys: Vec<(i64, String)> = tx
            .prepare_cached(&format!(
                "SELECT r.hrow, r.key FROM records r WHERE {} ORDER BY {} LIMIT ? OFFSET ?",
                sql.page_filter, sql.order
            ))?
            .query_map(rusqlite::params_from_iter(&args), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut one = tx.prepare_cached(
            "SELECT r.tag, r.body, r.updated, r.flags, \
             (SELECT c.tag FROM records c WHERE c.hrow = r.hrow AND c.channel = 'comanagement' \
              AND c.key = r.key), \
             (SELECT d.flags FROM records d WHERE d.hrow = r.hrow AND d.channel = 'defender' \
              AND d.key = r.key) \
             FROM records r WHERE r.hrow = ?1 AND r.channel = 'devices' AND r.key = ?2",
        )?;
        let mut rows = Vec::with_capacity(keys.len());
        for (hrow, key) in keys {
            let hierarchy_id = hierarchies
                .iter()
                .find(|h| h.0 == hrow)
                .map(|h| h.1.clone())
                .unwrap_or_default();
            let row = one
                .query_row(params![hrow, key], |r| {
                    Ok(DeviceRow {
                        record: RecordRow {
                            hierarchy_id,
                            key: key.clone(),
                            tag: r.get(0)?,
                            body: r.get(1)?,
                            updated: r.get(2)?,
                        },
                        flags: r.get(3)?,
                        comanagement_state: r.get(4)?,
                        defender_flags: r.get(5)?,
                    })
                })
                .optional()?;
            rows.extend(row);
        }
        drop(one);
        tx.finish()?;
        Ok((rows, total as u64))
    }

    fn has_record(&self, row: i64, channel: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .prepare_cached("SELECT 1 FROM records WHERE hrow = ?1 AND channel = ?2 AND key = ?3")?
            .exists(params![row, channel, key])?)
    }

    fn users(&self, tenant_id: &str) -> Result<Vec<User>, StoreError> {
        self.users_where("tenant_id = ?1", &[tenant_id])
    }

    fn set_intune_roles(
        &self,
        tenant_id: &str,
        user_id: &str,
        roles: &[String],
    ) -> Result<bool, StoreError> {
        let roles = serde_json::to_string(roles).unwrap_or_else(|_| "[]".into());
        let n = self.lock().execute(
            "UPDATE users SET intune_roles = ?3 WHERE tenant_id = ?1 AND id = ?2",
            params![tenant_id, user_id, roles],
        )?;
        Ok(n > 0)
    }

    fn put_declared_actions(
        &self,
        row: i64,
        feature_id: &str,
        decls: &[ActionDecl],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if !tx
            .prepare_cached("SELECT 1 FROM hierarchies WHERE row = ?1")?
            .exists([row])?
        {
            return Err(StoreError::HierarchyGone(
                "the hierarchy was offboarded while the request ran".into(),
            ));
        }
        if !tx
            .prepare_cached("SELECT 1 FROM features WHERE hrow = ?1 AND feature_id = ?2")?
            .exists(params![row, feature_id])?
        {
            return Err(StoreError::FeatureNotEnabled(format!(
                "feature {feature_id} is not enabled"
            )));
        }
        for d in decls {
            let other: Option<String> = tx
                .query_row(
                    "SELECT feature_id FROM declared_actions WHERE hrow = ?1 AND action_id = ?2 \
                     AND feature_id != ?3",
                    params![row, d.id, feature_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                return Err(StoreError::Conflict(format!(
                    "the action \"{}\" is declared by the feature {other} of this hierarchy; \
                     an action id belongs to one enabled feature",
                    d.id
                )));
            }
        }
        tx.execute(
            "DELETE FROM declared_actions WHERE hrow = ?1 AND feature_id = ?2",
            params![row, feature_id],
        )?;
        for (i, d) in decls.iter().enumerate() {
            let decl = serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO declared_actions(hrow, action_id, feature_id, position, decl) \
                 VALUES(?1, ?2, ?3, ?4, ?5)",
                params![row, d.id, feature_id, i as i64, decl],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn declared_actions(&self, row: i64) -> Result<Vec<(String, ActionDecl)>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT feature_id, decl FROM declared_actions WHERE hrow = ?1 \
             ORDER BY feature_id, position",
        )?;
        let rows: Vec<(String, String)> = st
            .query_map([row], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(f, d)| {
                Ok((
                    f,
                    serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ))
            })
            .collect()
    }

    fn insert_action(&self, a: &NewAction) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let d = &a.doc;
        if !tx
            .prepare_cached(
                "SELECT 1 FROM declared_actions WHERE hrow = ?1 AND action_id = ?2 \
                 AND feature_id = ?3",
            )?
            .exists(params![a.hrow, d.action, d.feature])?
        {
            return Err(StoreError::FeatureNotEnabled(format!(
                "the feature {} no longer declares the action \"{}\" (it was disabled while the \
                 request ran); nothing was queued",
                d.feature, d.action
            )));
        }
        tx.execute(
            "INSERT INTO actions(id, tenant_id, hrow, hierarchy_id, action, feature, resource_id, \
             collection_id, parameters, requested_by, requested_by_id, status, authority, \
             use_intune_rbac, result, error_code, error_message, created, completed, timeout_secs, \
             deadline_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
             ?16, ?17, ?18, ?19, ?20, ?21)",
            params![
                d.id,
                d.tenant_id,
                a.hrow,
                d.hierarchy_id,
                d.action,
                d.feature,
                d.resource_id,
                d.collection_id,
                Value::Object(d.parameters.clone()).to_string(),
                d.requested_by,
                d.requested_by_id,
                d.status.as_str(),
                d.authority,
                d.use_intune_rbac,
                d.result
                    .as_ref()
                    .and_then(|r| serde_json::to_string(r).ok()),
                d.error.as_ref().map(|e| e.code.clone()),
                d.error.as_ref().map(|e| e.message.clone()),
                d.created,
                d.completed,
                d.timeout_secs as i64,
                a.deadline_ms,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn action(&self, tenant_id: &str, id: &str) -> Result<Option<StoredAction>, StoreError> {
        let conn = self.lock();
        expire_in(&conn, crate::util::now_ms(), None)?;
        Ok(select_actions(
            &conn,
            "a.tenant_id = ?1 AND a.id = ?2",
            params![tenant_id, id],
        )?
        .pop())
    }

    fn actions(&self, tenant_id: &str, f: &ActionFilter) -> Result<Vec<StoredAction>, StoreError> {
        let conn = self.lock();
        expire_in(&conn, crate::util::now_ms(), None)?;
        let mut v = select_actions(
            &conn,
            "a.tenant_id = ?1 AND (?2 IS NULL OR a.hierarchy_id = lower(?2)) \
             AND (?3 IS NULL OR a.resource_id = ?3) AND (?4 IS NULL OR a.status = ?4) \
             AND (?5 IS NULL OR h.app_id = lower(?5))",
            params![
                tenant_id,
                f.hierarchy_id,
                f.resource_id,
                f.status,
                f.owner_app
            ],
        )?;
        v.reverse();
        Ok(v)
    }

    fn take_actions(
        &self,
        row: i64,
        connector_id: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredAction>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        expire_in(&tx, now_ms, Some(row))?;
        tx.execute(
            "INSERT INTO connectors(hrow, connector_id, last_heartbeat) VALUES(?1, ?2, ?3) \
             ON CONFLICT(hrow) DO UPDATE SET connector_id = excluded.connector_id, \
             last_heartbeat = excluded.last_heartbeat",
            params![row, connector_id, now_ms.div_euclid(1000)],
        )?;
        let open: Vec<(i64, String, String)> = tx
            .prepare_cached(
                "SELECT seq, status, delivered_to FROM actions WHERE hrow = ?1 \
                 AND status IN ('pending', 'running') ORDER BY seq",
            )?
            .query_map([row], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let taken = crate::util::unix_to_rfc3339(now_ms.div_euclid(1000));
        let mut seqs = Vec::new();
        for (seq, status, delivered) in open {
            if seqs.len() >= limit {
                break;
            }
            let mut delivered = json_vec(delivered)?;
            // A running action goes to another connector process (one that restarted after a
            // crash), never twice to the same one.
            if status == "running" && delivered.iter().any(|c| c == connector_id) {
                continue;
            }
            delivered.push(connector_id.to_string());
            tx.execute(
                "UPDATE actions SET status = 'running', connector_id = ?2, taken = ?3, \
                 delivered_to = ?4 WHERE seq = ?1",
                params![
                    seq,
                    connector_id,
                    taken,
                    serde_json::to_string(&delivered).unwrap_or_else(|_| "[]".into())
                ],
            )?;
            seqs.push(seq);
        }
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            out.extend(select_actions(&tx, "a.seq = ?1", params![seq])?);
        }
        tx.commit()?;
        Ok(out)
    }

    fn answer_action(
        &self,
        tenant_id: &str,
        id: &str,
        answer: &ActionAnswer,
        now_ms: i64,
    ) -> Result<AnswerOutcome, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        expire_in(&tx, now_ms, None)?;
        let n = tx.execute(
            "UPDATE actions SET status = ?3, authority = ?4, result = ?5, error_code = ?6, \
             error_message = ?7, completed = ?8, answered_by = ?9 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' \
             AND EXISTS (SELECT 1 FROM json_each(delivered_to) WHERE value = ?9)",
            params![
                tenant_id,
                id,
                answer.status.as_str(),
                answer.authority,
                answer
                    .result
                    .as_ref()
                    .and_then(|r| serde_json::to_string(r).ok()),
                answer.error.as_ref().map(|e| e.code.clone()),
                answer.error.as_ref().map(|e| e.message.clone()),
                crate::util::unix_to_rfc3339(now_ms.div_euclid(1000)),
                answer.connector_id,
            ],
        )?;
        let stored = select_actions(
            &tx,
            "a.tenant_id = ?1 AND a.id = ?2",
            params![tenant_id, id],
        )?
        .pop();
        tx.commit()?;
        Ok(match stored {
            None => AnswerOutcome::Missing,
            Some(a) if n > 0 => AnswerOutcome::Recorded(a),
            Some(a) if !a.doc.status.is_final() => AnswerOutcome::NotTaken(a),
            Some(a) => AnswerOutcome::Final(a),
        })
    }

    fn expire_actions(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = expire_in(&tx, now_ms, None)?;
        tx.commit()?;
        Ok(n)
    }

    fn put_connector_beat(
        &self,
        row: i64,
        b: &ConnectorBeat,
        now_unix: i64,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO connectors(hrow, connector_id, version, interval_secs, last_upload, \
             last_error, last_heartbeat) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(hrow) DO UPDATE SET connector_id = excluded.connector_id, \
             version = excluded.version, interval_secs = excluded.interval_secs, \
             last_upload = excluded.last_upload, last_error = excluded.last_error, \
             last_heartbeat = excluded.last_heartbeat",
            params![
                row,
                b.connector_id,
                b.version,
                i64::try_from(b.interval_secs).unwrap_or(i64::MAX),
                b.last_upload,
                b.last_error,
                now_unix
            ],
        )?;
        Ok(())
    }

    fn connector(&self, row: i64) -> Result<Option<ConnectorRow>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT connector_id, version, interval_secs, last_upload, last_error, \
                 last_heartbeat FROM connectors WHERE hrow = ?1",
                [row],
                |r| {
                    Ok(ConnectorRow {
                        connector_id: r.get(0)?,
                        version: r.get(1)?,
                        interval_secs: r.get::<_, Option<i64>>(2)?.map(|n| n.max(0) as u64),
                        last_upload: r.get(3)?,
                        last_error: r.get(4)?,
                        last_heartbeat: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }
}

/// Times out the `pending` and `running` actions (of one hierarchy, or all) whose deadline
/// passed: `timedOut`, error code `timedOut`, saying when the connector was last seen.
fn expire_in(conn: &Connection, now_ms: i64, hrow: Option<i64>) -> Result<usize, StoreError> {
    let due: Vec<(i64, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT a.seq, a.timeout_secs, c.last_heartbeat FROM actions a \
             LEFT JOIN connectors c ON c.hrow = a.hrow \
             WHERE a.status IN ('pending', 'running') AND a.deadline_ms <= ?1 \
             AND (?2 IS NULL OR a.hrow = ?2)",
        )?
        .query_map(params![now_ms, hrow], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    if due.is_empty() {
        return Ok(0);
    }
    let completed = crate::util::unix_to_rfc3339(now_ms.div_euclid(1000));
    let mut st = conn.prepare_cached(
        "UPDATE actions SET status = 'timedOut', error_code = 'timedOut', error_message = ?2, \
         completed = ?3 WHERE seq = ?1 AND status IN ('pending', 'running')",
    )?;
    let mut n = 0;
    for (seq, secs, seen) in due {
        let seen = match seen {
            Some(t) => format!("connector last seen {}", crate::util::unix_to_rfc3339(t)),
            None => "the connector has never connected".to_string(),
        };
        n += st.execute(params![
            seq,
            format!("no answer from the site's connector within {secs} s ({seen})"),
            completed
        ])?;
    }
    Ok(n)
}

fn parse_status(s: &str) -> Result<ActionStatus, StoreError> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unknown action status {s:?}")))
}

/// The actions matching `clause` (over `actions a JOIN hierarchies h`), oldest first.
fn select_actions(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StoredAction>, StoreError> {
    let sql = format!(
        "SELECT a.id, a.action, a.feature, a.hierarchy_id, a.resource_id, a.collection_id, \
         a.parameters, a.requested_by, a.requested_by_id, a.tenant_id, a.status, a.authority, \
         a.use_intune_rbac, a.result, a.error_code, a.error_message, a.created, a.completed, \
         a.timeout_secs, a.hrow, h.app_id, a.connector_id, a.taken, a.answered_by \
         FROM actions a JOIN hierarchies h ON h.row = a.hrow WHERE {clause} ORDER BY a.seq"
    );
    type Row = (
        (String, String, String, String, Option<i64>, Option<String>),
        (String, String, String, String, String, Option<String>),
        (
            bool,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
        ),
        (
            i64,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
    );
    let mut st = conn.prepare_cached(&sql)?;
    let rows: Vec<Row> = st
        .query_map(args, |r| {
            Ok((
                (
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ),
                (
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ),
                (
                    r.get(12)?,
                    r.get(13)?,
                    r.get(14)?,
                    r.get(15)?,
                    r.get(16)?,
                    r.get(17)?,
                ),
                (
                    r.get(18)?,
                    r.get(19)?,
                    r.get(20)?,
                    r.get(21)?,
                    r.get(22)?,
                    r.get(23)?,
                ),
            ))
        })?
        .collect::<Result<_, _>>()?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    rows.into_iter()
        .map(
            |(
                (id, action, feature, hierarchy_id, resource_id, collection_id),
                (parameters, requested_by, requested_by_id, tenant_id, status, authority),
                (use_intune_rbac, result, error_code, error_message, created, completed),
                (timeout_secs, hrow, owner_app, connector_id, taken, answered_by),
            )| {
                let mut doc = ActionDoc::new(
                    id,
                    action,
                    hierarchy_id,
                    requested_by,
                    parse_status(&status)?,
                    created,
                );
                doc.feature = feature;
                doc.resource_id = resource_id;
                doc.collection_id = collection_id;
                doc.parameters = serde_json::from_str(&parameters).map_err(corrupt)?;
                doc.requested_by_id = requested_by_id;
                doc.tenant_id = tenant_id;
                doc.authority = authority;
                doc.use_intune_rbac = use_intune_rbac;
                doc.result = result
                    .map(|r| serde_json::from_str(&r))
                    .transpose()
                    .map_err(corrupt)?;
                doc.error =
                    error_code.map(|c| ActionError::new(c, error_message.unwrap_or_default()));
                doc.completed = completed;
                doc.timeout_secs = timeout_secs.max(0) as u64;
                Ok(StoredAction {
                    doc,
                    hrow,
                    owner_app,
                    connector_id,
                    taken,
                    answered_by,
                })
            },
        )
        .collect()
}

/// The WHERE and ORDER BY of a device page over `records r` and their arguments (after the
/// scope's, the first `?`: the hierarchy's row when `one_hierarchy`, else the tenant id).
struct DeviceSql {
    /// The WHERE of the count.
    filter: String,
    /// The WHERE of the page: the same conditions, those on other channels as lookups from
    /// each device in order, so that a page stops at its last device.
    page_filter: String,
    order: String,
    args: Vec<rusqlite::types::Value>,
    /// A count that reads fewer rows than `COUNT(*) … WHERE filter`, when there is one (its only
    /// argument is the scope's).
    count: Option<String>,
}

/// Every condition is written so that an index serves it (see the v5 migration): the name
/// prefix is a LIKE on `tag`, which SQLite turns into a range of `records_tag_nocase` (LIKE and
/// the index's NOCASE agree on case); the eligibility class is a range of `records_flags`; the
/// states of the other channels are semi-joins on `(hrow, key)` driven by their index when
/// they select records, and lookups by primary key when they exclude them.
fn device_sql(q: &DeviceQuery, one_hierarchy: bool) -> DeviceSql {
    use rusqlite::types::Value as V;
    let scope = |alias: &str| {
        if one_hierarchy {
            format!("{alias}.hrow = ?1")
        } else {
            format!("{alias}.hrow IN (SELECT row FROM hierarchies WHERE tenant_id = ?1)")
        }
    };
    let mut filter = vec![scope("r"), "r.channel = 'devices'".to_string()];
    let mut args: Vec<V> = Vec::new();
    if let Some(name) = &q.name {
        let esc = name
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        filter.push("r.tag LIKE ? ESCAPE '\\'".into());
        args.push(V::Text(format!("{esc}%")));
    }
    if let Some(class) = q.eligibility {
        let lo = eligibility_flags(class);
        filter.push("r.flags >= ? AND r.flags < ?".into());
        args.push(V::Integer(lo));
        args.push(V::Integer(lo + (1 << ELIGIBILITY_SHIFT)));
    }
    let absent = |channel: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM records x WHERE x.hrow = r.hrow AND x.channel = '{channel}' \
             AND x.key = r.key)"
        )
    };
    // The count reads the other channel's matching records from its index (a semi-join); the
    // page looks each device's record up.
    let mut page_filter = filter.clone();
    let present = |channel: &str, cond: &str| {
        format!(
            "EXISTS (SELECT 1 FROM records x WHERE x.hrow = r.hrow AND x.channel = '{channel}' \
             AND x.key = r.key AND {cond})"
        )
    };
    match q.comanagement {
        Some(ComanagementFilter::State(state)) => {
            filter.push(format!(
                "(r.hrow, r.key) IN (SELECT c.hrow, c.key FROM records c WHERE {} \
                 AND c.channel = 'comanagement' AND c.tag = ? COLLATE NOCASE)",
                scope("c")
            ));
            page_filter.push(present("comanagement", "x.tag = ?"));
            args.push(V::Text(state.as_str().into()));
        }
        Some(ComanagementFilter::None) => {
            filter.push(absent("comanagement"));
            page_filter.push(absent("comanagement"));
        }
        None => {}
    }
    match q.defender {
        Some(f @ (DefenderFilter::Healthy | DefenderFilter::Unhealthy)) => {
            let op = if f == DefenderFilter::Unhealthy {
                "!="
            } else {
                "="
            };
            filter.push(format!(
                "(r.hrow, r.key) IN (SELECT d.hrow, d.key FROM records d WHERE {} \
                 AND d.channel = 'defender' AND (d.flags & {FLAG_DEFENDER_UNHEALTHY}) {op} 0)",
                scope("d")
            ));
            page_filter.push(present(
                "defender",
                &format!("(x.flags & {FLAG_DEFENDER_UNHEALTHY}) {op} 0"),
            ));
        }
        Some(DefenderFilter::Unreported) => {
            filter.push(absent("defender"));
            page_filter.push(absent("defender"));
        }
        None => {}
    }
    let dir = if q.desc { "DESC" } else { "ASC" };
    let order = match q.sort {
        DeviceSort::Default => "r.hrow, r.key".to_string(),
        DeviceSort::Name => format!("r.tag COLLATE NOCASE {dir}, r.hrow {dir}, r.key {dir}"),
        DeviceSort::LastUploaded => format!("r.updated {dir}, r.hrow {dir}, r.key {dir}"),
        DeviceSort::ResourceId => format!("CAST(r.key AS INTEGER) {dir}, r.hrow {dir}"),
    };
    DeviceSql {
        filter: filter.join(" AND "),
        page_filter: page_filter.join(" AND "),
        order,
        args,
        count: device_count_sql(q, &scope),
    }
}

/// The count of a device list filtered by Defender health or without co-management alone, from
/// the other channel's index: every `defender` record has its device (an upload refuses one
/// without, deleting a device deletes it), so the devices without one are the devices less
/// the records. `comanagement` records may name devices not uploaded: those are not counted.
fn device_count_sql(q: &DeviceQuery, scope: &dyn Fn(&str) -> String) -> Option<String> {
    if q.name.is_some() || q.eligibility.is_some() {
        return None;
    }
    let devices = format!(
        "(SELECT COUNT(*) FROM records r WHERE {} AND r.channel = 'devices')",
        scope("r")
    );
    let defender = |cond: &str| {
        format!(
            "(SELECT COUNT(*) FROM records d WHERE {} AND d.channel = 'defender'{cond})",
            scope("d")
        )
    };
    match (q.comanagement, q.defender) {
        (None, Some(DefenderFilter::Unhealthy)) => Some(format!(
            "SELECT {}",
            defender(&format!(" AND (d.flags & {FLAG_DEFENDER_UNHEALTHY}) != 0"))
        )),
        (None, Some(DefenderFilter::Healthy)) => Some(format!(
            "SELECT {}",
            defender(&format!(" AND (d.flags & {FLAG_DEFENDER_UNHEALTHY}) = 0"))
        )),
        (None, Some(DefenderFilter::Unreported)) => {
            Some(format!("SELECT {devices} - {}", defender("")))
        }
        (Some(ComanagementFilter::None), None) => Some(format!(
            "SELECT {devices} - (SELECT COUNT(*) FROM records c WHERE {} \
             AND c.channel = 'comanagement' AND EXISTS (SELECT 1 FROM records x \
             WHERE x.hrow = c.hrow AND x.channel = 'devices' AND x.key = c.key))",
            scope("c")
        )),
        _ => None,
    }
}

impl SqliteStore {
    fn users_where(&self, clause: &str, args: &[&str]) -> Result<Vec<User>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT id, tenant_id, upn, password_hash, roles, intune_license, intune_roles \
             FROM users WHERE {clause} ORDER BY upn"
        );
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(id, tenant_id, upn, password_hash, roles, intune_license, intune_roles)| {
                    Ok(User {
                        id,
                        tenant_id,
                        upn,
                        password_hash,
                        roles: json_vec(roles)?,
                        intune_license,
                        intune_roles: json_vec(intune_roles)?,
                    })
                },
            )
            .collect()
    }

    fn user_where(&self, clause: &str, args: &[&str]) -> Result<Option<User>, StoreError> {
        Ok(self.users_where(clause, args)?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(s: &SqliteStore) -> i64 {
        s.create_tenant(&Tenant {
            id: "t".into(),
            display_name: "T".into(),
            domains: vec!["t.example".into()],
            use_intune_rbac: false,
        })
        .unwrap();
        let (h, created) = s.upsert_hierarchy(&upsert("h")).unwrap();
        assert!(created);
        for f in ["tenant-attach", "endpoint-analytics"] {
            s.put_feature(h.row, f, &serde_json::json!({}), "x")
                .unwrap();
        }
        h.row
    }

    fn upsert(hid: &str) -> HierarchyUpsert {
        HierarchyUpsert {
            tenant_id: "t".into(),
            hierarchy_id: hid.into(),
            site_code: "PS1".into(),
            site_name: None,
            site_version: "2303".into(),
            environment: "public".into(),
            app_id: None,
            caller_app: None,
            now: "x".into(),
        }
    }

    fn rec(key: &str, body: &str) -> PreparedRecord {
        PreparedRecord {
            key: key.into(),
            hash: xxhash_rust::xxh3::xxh3_64(body.as_bytes()) as i64,
            sent_hash: xxhash_rust::xxh3::xxh3_64(body.as_bytes()) as i64,
            tag: None,
            flags: 0,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn migrations_are_versioned_and_rerun_safely() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert!(s.is_empty().unwrap());
    }

    #[test]
    fn v2_removes_orphaned_records_and_never_reuses_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("cloud.db")).unwrap();
            c.execute_batch(&format!(
                "BEGIN; {}; PRAGMA user_version=1; COMMIT;",
                MIGRATIONS[0]
            ))
            .unwrap();
            c.execute_batch(
                "INSERT INTO tenants VALUES('t','T',0);
                 INSERT INTO hierarchies VALUES(1,'t','h1','PS1','','2303','public',NULL,'x','x');
                 INSERT INTO features VALUES(1,'tenant-attach','{}','x','x',NULL);
                 INSERT INTO records VALUES(1,'devices','1',0,NULL,0,0,x'7b7d');
                 INSERT INTO records VALUES(1,'analytics','1',0,NULL,0,0,x'7b7d');
                 INSERT INTO records VALUES(2,'devices','1',0,NULL,0,0,x'7b7d');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        let n = |sql: &str| -> i64 { s.lock().query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(n("SELECT COUNT(*) FROM records"), 1);
        assert_eq!(n("SELECT COUNT(*) FROM features"), 1);
        let h = s.hierarchy("t", "h1").unwrap().unwrap();
        s.delete_hierarchy(h.row).unwrap();
        let (h2, _) = s.upsert_hierarchy(&upsert("h2")).unwrap();
        assert!(h2.row > h.row, "row {} reused", h2.row);
    }

    /// A store at v2 (before sent hashes) opens; its records' sent hashes are unknown, so the
    /// census matches no client ledger and the client reconciles once: it resends the records,
    /// which the cloud finds unchanged but whose sent hashes it records, and the census then
    /// matches.
    #[test]
    fn v3_opens_a_v2_store_whose_census_forces_one_reconciliation() {
        use cloudattach_model::gateway::{ChannelCensus, KeyDigest, UNKNOWN_SENT_HASH};
        let dir = tempfile::tempdir().unwrap();
        let body = r#"{"a":1}"#;
        let h = xxhash_rust::xxh3::xxh3_64(body.as_bytes()) as i64;
        {
            let c = Connection::open(dir.path().join("cloud.db")).unwrap();
            for (i, m) in MIGRATIONS[..2].iter().enumerate() {
                c.execute_batch(&format!(
                    "BEGIN; {m}; PRAGMA user_version={}; COMMIT;",
                    i + 1
                ))
                .unwrap();
            }
            c.execute_batch(&format!(
                "INSERT INTO tenants VALUES('t','T',0);
                 INSERT INTO hierarchies VALUES(1,'t','h1','PS1','','2303','public',NULL,'x','x');
                 INSERT INTO features VALUES(1,'tenant-attach','{{}}','x','x',NULL);
                 INSERT INTO records VALUES(1,'devices','1',{h},NULL,0,0,CAST('{body}' AS BLOB));
                 INSERT INTO records VALUES(1,'devices','2',{h},NULL,0,0,CAST('{body}' AS BLOB));"
            ))
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        // What the client's ledger holds: the hash of the bytes it sent.
        let ledger = KeyDigest::of([("1", h as u64), ("2", h as u64)]);
        let census = ChannelCensus::new("devices", s.channel_digest(1, "devices").unwrap());
        assert_eq!(census.records, 2);
        assert!(
            !census.matches(&ledger),
            "the census forces a reconciliation"
        );
        let held = s.channel_keys(1, "devices", None, 10).unwrap();
        assert!(held.iter().all(|r| r.hash == UNKNOWN_SENT_HASH), "{held:?}");
        // The client resends both: unchanged, and now in line with its ledger.
        let r = s
            .apply_batch(
                "t",
                1,
                "devices",
                "tenant-attach",
                &[rec("1", body), rec("2", body)],
                &[],
                false,
                &[],
                "now",
            )
            .unwrap();
        assert_eq!((r.upserted, r.unchanged), (0, 2));
        let census = ChannelCensus::new("devices", s.channel_digest(1, "devices").unwrap());
        assert!(census.matches(&ledger));
    }

    /// A store at v3 opens: its users hold no Intune role, and its hierarchies can be
    /// offboarded with the new tables in place.
    #[test]
    fn v4_opens_a_v3_store_with_users_and_no_intune_roles() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("cloud.db")).unwrap();
            for (i, m) in MIGRATIONS[..3].iter().enumerate() {
                c.execute_batch(&format!(
                    "BEGIN; {m}; PRAGMA user_version={}; COMMIT;",
                    i + 1
                ))
                .unwrap();
            }
            c.execute_batch(
                "INSERT INTO tenants VALUES('t','T',0);
                 INSERT INTO users VALUES('u','t','u@t.example','x','[]',1);
                 INSERT INTO hierarchies VALUES(1,'t','h1','PS1','','2303','public',NULL,'x','x');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let u = s.user_by_id("t", "u").unwrap().unwrap();
        assert!(u.intune_roles.is_empty());
        assert!(
            s.set_intune_roles("t", "u", &["Help Desk Operator".into()])
                .unwrap()
        );
        assert_eq!(
            s.users("t").unwrap()[0].intune_roles,
            ["Help Desk Operator"]
        );
        s.delete_hierarchy(1).unwrap();
        assert!(s.hierarchy("t", "h1").unwrap().is_none());
    }

    fn device_body(id: i64, name: &str, class: u8) -> Vec<u8> {
        let mut d = cloudattach_model::Device::new(id, name);
        d.client = true;
        d.client_active = true;
        d.client_version = Some("5.00.9106.1000".into());
        d.os = "Microsoft Windows NT Workstation 10.0".into();
        d.os_build = "10.0.19045".into();
        d.join_type = cloudattach_model::JoinType::Hybrid;
        match class {
            // comanaged
            1 => d.mdm_enrolled = true,
            // eligibleButNotAzureAdJoined
            2 => d.join_type = cloudattach_model::JoinType::Domain,
            // needsOsUpdate
            3 => d.os_build = "10.0.15063".into(),
            // ineligible (server)
            4 => d.os = "Microsoft Windows NT Server 10.0".into(),
            // eligible
            _ => {}
        }
        serde_json::to_vec(&d).unwrap()
    }

    fn defender_body(id: i64, healthy: bool) -> Vec<u8> {
        let mut s = cloudattach_model::DefenderState::default();
        s.defender_enabled = true;
        s.rtp_enabled = true;
        s.tamper_protection_enabled = true;
        s.signature_out_of_date = !healthy;
        serde_json::to_vec(&cloudattach_model::rules::DefenderRecord::new(id, s)).unwrap()
    }

    fn prepared_device(id: i64, name: &str, class: u8) -> PreparedRecord {
        let body = device_body(id, name, class);
        let d: cloudattach_model::Device = serde_json::from_slice(&body).unwrap();
        PreparedRecord {
            flags: crate::ingest::device_flags(&d),
            tag: Some(name.into()),
            ..rec(&id.to_string(), std::str::from_utf8(&body).unwrap())
        }
    }

    fn prepared_defender(id: i64, healthy: bool) -> PreparedRecord {
        let body = defender_body(id, healthy);
        PreparedRecord {
            flags: if healthy { 0 } else { FLAG_DEFENDER_UNHEALTHY },
            ..rec(&id.to_string(), std::str::from_utf8(&body).unwrap())
        }
    }

    fn prepared_comanagement(id: i64, state: &str) -> PreparedRecord {
        let body = format!(r#"{{"resource_id":{id},"state":"{state}"}}"#);
        PreparedRecord {
            tag: Some(state.into()),
            ..rec(&id.to_string(), &body)
        }
    }

    /// A store at v4, with devices and Defender records stored before the flags of v5, opens
    /// at v5 with every device's eligibility class and every Defender record's health filled.
    #[test]
    fn v5_fills_the_flags_of_a_v4_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("cloud.db")).unwrap();
            for (i, m) in MIGRATIONS[..4].iter().enumerate() {
                c.execute_batch(&format!(
                    "BEGIN; {m}; PRAGMA user_version={}; COMMIT;",
                    i + 1
                ))
                .unwrap();
            }
            c.execute_batch(
                "INSERT INTO tenants VALUES('t','T',0);
                 INSERT INTO hierarchies VALUES(1,'t','h1','PS1','','2303','public',NULL,'x','x');
                 INSERT INTO features VALUES(1,'tenant-attach','{}','x','x',NULL);
                 INSERT INTO features VALUES(1,'defender-reporting','{}','x','x',NULL);",
            )
            .unwrap();
            let mut ins = c
                .prepare(
                    "INSERT INTO records(hrow, channel, key, hash, tag, flags, updated, body, \
                     sent_hash) VALUES(1, ?1, ?2, 0, ?3, ?4, 0, ?5, NULL)",
                )
                .unwrap();
            for id in 1..=5_i64 {
                let name = format!("PC-{id}");
                // v4 stored only the Endpoint analytics bit.
                ins.execute(params![
                    "devices",
                    id.to_string(),
                    name,
                    FLAG_EA_ELIGIBLE,
                    device_body(id, &name, id as u8)
                ])
                .unwrap();
            }
            ins.execute(params!["devices", "6", "BAD", 0, b"{}".to_vec()])
                .unwrap();
            ins.execute(params![
                "defender",
                "1",
                None::<String>,
                0,
                defender_body(1, true)
            ])
            .unwrap();
            ins.execute(params![
                "defender",
                "2",
                None::<String>,
                0,
                defender_body(2, false)
            ])
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), V5_DEVICE_FILTERS);
        let flags = |ch: &str, key: &str| -> i64 {
            s.lock()
                .query_row(
                    "SELECT flags FROM records WHERE hrow = 1 AND channel = ?1 AND key = ?2",
                    params![ch, key],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let classes = [
            EligibilityClass::Comanaged,
            EligibilityClass::EligibleButNotAzureAdJoined,
            EligibilityClass::NeedsOsUpdate,
            EligibilityClass::Ineligible,
            EligibilityClass::Eligible,
        ];
        for (id, class) in (1..=5).zip(classes) {
            let f = flags("devices", &id.to_string());
            assert_eq!(eligibility_of_flags(f), Some(class), "device {id}");
            assert_eq!(f & FLAG_EA_ELIGIBLE, FLAG_EA_ELIGIBLE, "kept");
        }
        assert_eq!(flags("devices", "6"), 0, "unreadable: not computed");
        assert_eq!(flags("defender", "1"), 0);
        assert_eq!(flags("defender", "2"), FLAG_DEFENDER_UNHEALTHY);
        // The filters read the filled flags.
        let q = DeviceQuery {
            eligibility: Some(EligibilityClass::NeedsOsUpdate),
            top: 10,
            ..Default::default()
        };
        let (rows, n) = s.device_page("t", &q).unwrap();
        assert_eq!((n, rows[0].record.key.as_str()), (1, "3"));
        let q = DeviceQuery {
            defender: Some(DefenderFilter::Unhealthy),
            top: 10,
            ..Default::default()
        };
        let (rows, n) = s.device_page("t", &q).unwrap();
        assert_eq!((n, rows[0].record.key.as_str()), (1, "2"));
        assert_eq!(rows[0].defender_flags, Some(FLAG_DEFENDER_UNHEALTHY));
    }

    /// Every filter and order of the device list is served by an index: no query plan scans
    /// the records table, and the orders of one hierarchy need no sort.
    #[test]
    fn device_queries_use_indexes() {
        use cloudattach_model::rules::ComanagementState;
        let s = SqliteStore::open_in_memory().unwrap();
        let plan = |sql: &str, n_args: usize| -> String {
            let conn = s.lock();
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut args: Vec<rusqlite::types::Value> = vec![1.into()];
            while args.len() < n_args {
                args.push("PC-1%".to_string().into());
            }
            let rows: Vec<String> = st
                .query_map(rusqlite::params_from_iter(&args), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.join("\n")
        };
        let base = DeviceQuery::default();
        let mut cases = vec![
            (
                "name",
                DeviceQuery {
                    name: Some("PC-1".into()),
                    ..base.clone()
                },
            ),
            (
                "eligibility",
                DeviceQuery {
                    eligibility: Some(EligibilityClass::Eligible),
                    ..base.clone()
                },
            ),
            (
                "comanaged",
                DeviceQuery {
                    comanagement: Some(ComanagementFilter::State(ComanagementState::Comanaged)),
                    ..base.clone()
                },
            ),
            (
                "no comanagement",
                DeviceQuery {
                    comanagement: Some(ComanagementFilter::None),
                    ..base.clone()
                },
            ),
            (
                "unhealthy",
                DeviceQuery {
                    defender: Some(DefenderFilter::Unhealthy),
                    ..base.clone()
                },
            ),
            (
                "unreported",
                DeviceQuery {
                    defender: Some(DefenderFilter::Unreported),
                    ..base.clone()
                },
            ),
        ];
        for (sort, name) in [
            (DeviceSort::Default, "default order"),
            (DeviceSort::Name, "by name"),
            (DeviceSort::LastUploaded, "by upload"),
            (DeviceSort::ResourceId, "by resource id"),
        ] {
            for desc in [false, true] {
                cases.push((
                    name,
                    DeviceQuery {
                        sort,
                        desc,
                        ..base.clone()
                    },
                ));
            }
        }
        for (what, q) in cases {
            let sql = device_sql(&q, true);
            let n = 1 + sql.args.len();
            let count = match &sql.count {
                Some(count) => plan(count, 1),
                None => plan(
                    &format!("SELECT COUNT(*) FROM records r WHERE {}", sql.filter),
                    n,
                ),
            };
            let page = plan(
                &format!(
                    "SELECT r.hrow, r.key FROM records r WHERE {} ORDER BY {} LIMIT 100 OFFSET 0",
                    sql.page_filter, sql.order
                ),
                n,
            );
            println!(
                "{what}:\n  count: {}\n  page: {}",
                count.replace('\n', "; "),
                page.replace('\n', "; ")
            );
            for p in [&count, &page] {
                assert!(
                    !p.lines().any(|l| l.starts_with("SCAN ")
                        && !l.contains("INDEX")
                        && l != "SCAN CONSTANT ROW"),
                    "{what}: a table scan\n{p}"
                );
            }
            // A filter's matches are sorted; an order alone is an index's.
            let filtered = q.name.is_some()
                || q.eligibility.is_some()
                || q.comanagement.is_some()
                || q.defender.is_some();
            assert!(
                filtered || !page.contains("TEMP B-TREE"),
                "{what}: a sort\n{page}"
            );
            if what == "name" {
                assert!(count.contains("records_tag_nocase"), "{what}: {count}");
            }
        }
    }

    /// Figures, not assertions: `cargo test -p cloudattach-cloud --lib device_page_timings -- --ignored --nocapture`.
    #[test]
    #[ignore = "inserts 1,000,000 devices; prints timings"]
    fn device_page_timings() {
        use cloudattach_model::rules::ComanagementState;
        use std::time::Instant;
        const N: i64 = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let row = setup(&s);
        for f in ["co-management", "defender-reporting"] {
            s.put_feature(row, f, &serde_json::json!({}), "x").unwrap();
        }
        let t = Instant::now();
        let batch = 10_000;
        for start in (1..=N).step_by(batch) {
            let ids = start..(start + batch as i64).min(N + 1);
            let names = |i: i64| format!("PC-{:07}", (i * 7919) % N);
            let devs: Vec<_> = ids
                .clone()
                .map(|i| prepared_device(i, &names(i), (i % 5) as u8))
                .collect();
            s.apply_batch(
                "t",
                row,
                "devices",
                "tenant-attach",
                &devs,
                &[],
                false,
                &[],
                "x",
            )
            .unwrap();
            let co: Vec<_> = ids
                .clone()
                .filter(|i| i % 3 == 0)
                .map(|i| {
                    prepared_comanagement(
                        i,
                        if i % 2 == 0 {
                            "comanaged"
                        } else {
                            "scheduledForEnrollment"
                        },
                    )
                })
                .collect();
            s.apply_batch(
                "t",
                row,
                "comanagement",
                "co-management",
                &co,
                &[],
                true,
                &[],
                "x",
            )
            .unwrap();
            let de: Vec<_> = ids
                .filter(|i| i % 2 == 0)
                .map(|i| prepared_defender(i, i % 4 != 0))
                .collect();
            s.apply_batch(
                "t",
                row,
                "defender",
                "defender-reporting",
                &de,
                &[],
                true,
                &[],
                "x",
            )
            .unwrap();
        }
        println!(
            "insert {N} devices (+ comanagement, defender): {:?}",
            t.elapsed()
        );
        let base = DeviceQuery {
            top: 100,
            ..Default::default()
        };
        let cases = [
            ("first page", base.clone()),
            (
                "name=PC-00012",
                DeviceQuery {
                    name: Some("pc-00012".into()),
                    ..base.clone()
                },
            ),
            (
                "$orderby=name first page",
                DeviceQuery {
                    sort: DeviceSort::Name,
                    ..base.clone()
                },
            ),
            (
                "$orderby=name desc first page",
                DeviceQuery {
                    sort: DeviceSort::Name,
                    desc: true,
                    ..base.clone()
                },
            ),
            (
                "$orderby=resource_id first page",
                DeviceQuery {
                    sort: DeviceSort::ResourceId,
                    ..base.clone()
                },
            ),
            (
                "$orderby=last_uploaded desc first page",
                DeviceQuery {
                    sort: DeviceSort::LastUploaded,
                    desc: true,
                    ..base.clone()
                },
            ),
            (
                "deep page $skiptoken=900000",
                DeviceQuery {
                    skip: 900_000,
                    ..base.clone()
                },
            ),
            (
                "deep page $orderby=name $skiptoken=900000",
                DeviceQuery {
                    skip: 900_000,
                    sort: DeviceSort::Name,
                    ..base.clone()
                },
            ),
            (
                "comanagement=comanaged",
                DeviceQuery {
                    comanagement: Some(ComanagementFilter::State(ComanagementState::Comanaged)),
                    ..base.clone()
                },
            ),
            (
                "comanagement=none",
                DeviceQuery {
                    comanagement: Some(ComanagementFilter::None),
                    ..base.clone()
                },
            ),
            (
                "defender=unhealthy",
                DeviceQuery {
                    defender: Some(DefenderFilter::Unhealthy),
                    ..base.clone()
                },
            ),
            (
                "defender=unreported",
                DeviceQuery {
                    defender: Some(DefenderFilter::Unreported),
                    ..base.clone()
                },
            ),
            (
                "eligibility=needsOsUpdate",
                DeviceQuery {
                    eligibility: Some(EligibilityClass::NeedsOsUpdate),
                    ..base.clone()
                },
            ),
            (
                "comanaged + unhealthy + $orderby=name",
                DeviceQuery {
                    comanagement: Some(ComanagementFilter::State(ComanagementState::Comanaged)),
                    defender: Some(DefenderFilter::Unhealthy),
                    sort: DeviceSort::Name,
                    ..base.clone()
                },
            ),
        ];
        for (what, q) in cases {
            let t = Instant::now();
            let (rows, n) = s.device_page("t", &q).unwrap();
            let cold = t.elapsed();
            let t = Instant::now();
            s.device_page("t", &q).unwrap();
            let warm = t.elapsed();
            // The count alone.
            let sql = device_sql(&q, true);
            let mut args: Vec<rusqlite::types::Value> = vec![row.into()];
            args.extend(sql.args);
            let t = Instant::now();
            let conn = s.lock();
            let _: i64 = match &sql.count {
                Some(c) => conn.query_row(c, [&args[0]], |r| r.get(0)).unwrap(),
                None => conn
                    .query_row(
                        &format!("SELECT COUNT(*) FROM records r WHERE {}", sql.filter),
                        rusqlite::params_from_iter(&args),
                        |r| r.get(0),
                    )
                    .unwrap(),
            };
            let count = t.elapsed();
            let mut pargs = args.clone();
            pargs.push(100.into());
            pargs.push((q.skip as i64).into());
            let plan: Vec<String> = conn
                .prepare(&format!(
                    "EXPLAIN QUERY PLAN SELECT r.hrow, r.key FROM records r WHERE {} ORDER BY {} \
                     LIMIT ? OFFSET ?",
                    sql.page_filter, sql.order
                ))
                .unwrap()
                .query_map(rusqlite::params_from_iter(&pargs), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let t = Instant::now();
            let k: Vec<String> = conn
                .prepare(&format!(
                    "SELECT r.key FROM records r WHERE {} ORDER BY {} LIMIT ? OFFSET ?",
                    sql.page_filter, sql.order
                ))
                .unwrap()
                .query_map(rusqlite::params_from_iter(&pargs), |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            println!(
                "  page plan: {} ({:?} for {} keys)",
                plan.join("; "),
                t.elapsed(),
                k.len()
            );
            drop(conn);
            println!(
                "{what}: first call {cold:?}, again {warm:?} (the count alone {count:?}); {n} match, {} returned",
                rows.len()
            );
        }
    }

    #[test]
    fn batches_are_idempotent_and_atomic() {
        let s = SqliteStore::open_in_memory().unwrap();
        let row = setup(&s);
        let ups = vec![rec("1", "{\"a\":1}"), rec("2", "{\"a\":2}")];
        let r = s
            .apply_batch(
                "t",
                row,
                "devices",
                "tenant-attach",
                &ups,
                &[],
                false,
                &[],
                "now",
            )
            .unwrap();
        assert_eq!((r.upserted, r.unchanged), (2, 0));
        let r = s
            .apply_batch(
                "t",
                row,
                "devices",
                "tenant-attach",
                &ups,
                &[],
                false,
                &[],
                "now",
            )
            .unwrap();
        assert_eq!((r.upserted, r.unchanged), (0, 2));
        // A dependent record of a missing device rejects the whole batch.
        let dep = vec![rec("1", "{}"), rec("3", "{}")];
        let e = s.apply_batch(
            "t",
            row,
            "analytics",
            "endpoint-analytics",
            &dep,
            &[],
            true,
            &[],
            "now",
        );
        assert!(matches!(e, Err(StoreError::MissingDevices(ref k)) if k == &["3".to_string()]));
        assert_eq!(s.count(row, "analytics").unwrap(), 0);
        let r = s
            .apply_batch(
                "t",
                row,
                "analytics",
                "endpoint-analytics",
                &dep[..1],
                &[],
                true,
                &[],
                "now",
            )
            .unwrap();
        assert_eq!(r.upserted, 1);
        // Deleting a device cascades to its dependent records.
        let r = s
            .apply_batch(
                "t",
                row,
                "devices",
                "tenant-attach",
                &[],
                &["1".into(), "9".into()],
                false,
                &["analytics"],
                "now",
            )
            .unwrap();
        assert_eq!((r.deleted, r.unchanged), (1, 1));
        assert_eq!(s.count(row, "analytics").unwrap(), 0);
    }
}

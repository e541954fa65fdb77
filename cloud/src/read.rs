//! The read API and reports.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::gateway::{find_hierarchy, hierarchy_json};
use crate::ingest::{
    AnalyticsRecord, BUILTIN_FEATURES, ComanagementRecord, DefenderRecord, ext_channel,
};
use crate::server::{AppState, St, db};
use crate::store::{
    ComanagementFilter, DefenderFilter, DeviceQuery, DeviceSort, FLAG_DEFENDER_UNHEALTHY,
    FLAG_EA_ELIGIBLE, FLAG_HAS_TELEMETRY, Feature, Hierarchy, RecordRow, Store, StoreError,
};
use crate::util;
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use cloudattach_model::DottedVersion;
use cloudattach_model::comanagement::{EligibilityClass, explain_class};
use cloudattach_model::gateway::{ExtRecord, ExtRecords, HierarchyStatus, PluginStatus};
use cloudattach_model::version::client;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type R = Result<Response, ApiError>;
type Q = Query<HashMap<String, String>>;

/// Minimum reporting devices for Endpoint analytics scores.
pub const MIN_EA_DEVICES: usize = 5;

/// The effective RBAC authority: Intune alone if and only if the hierarchy's rbac-authority
/// setting clears "enforce Configuration Manager RBAC" and the tenant uses Intune RBAC.
pub fn effective_authority(features: &[Feature], use_intune_rbac: bool) -> &'static str {
    let enforce = features
        .iter()
        .find(|f| f.feature_id == "rbac-authority")
        .and_then(|f| {
            f.settings
                .get("enforce_configmgr_rbac")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !enforce && use_intune_rbac {
        "intune"
    } else {
        "configmgr+intune"
    }
}

fn plugin_status(
    s: &dyn Store,
    h: &Hierarchy,
    features: &[Feature],
    use_intune_rbac: bool,
) -> Result<Vec<PluginStatus>, StoreError> {
    let row = h.row;
    let mut out = Vec::new();
    let find = |id: &str| features.iter().find(|f| f.feature_id == id);
    for id in BUILTIN_FEATURES {
        let f = find(id);
        let on = f.is_some();
        let counts = match id {
            "tenant-attach" => json!({"devices_uploaded": s.count(row, "devices")?}),
            "endpoint-analytics" => json!({
                "devices_enrolled": if on { s.count_flag(row, "devices", FLAG_EA_ELIGIBLE)? } else { 0 },
                "devices_reporting": s.count_flag(row, "analytics", FLAG_HAS_TELEMETRY)?,
            }),
            "defender-reporting" => json!({"devices_reported": s.count(row, "defender")?}),
            "co-management" => json!({
                "devices_scheduled": s.count_tag(row, "comanagement", "scheduledForEnrollment")?,
                "devices_enrolled": s.count_tag(row, "comanagement", "comanaged")?,
            }),
            _ => json!({}),
        };
        let mut v = PluginStatus::new(id, on)
            .with_settings(f.map_or(Value::Null, |f| f.settings.clone()))
            .with_last_sync(f.and_then(|f| f.last_sync.clone()));
        if let Value::Object(counts) = counts {
            v.counts = counts;
        }
        if id == "rbac-authority" {
            v = v.with_extra(
                "effective_authority",
                effective_authority(features, use_intune_rbac),
            );
        }
        out.push(v);
    }
    for f in features
        .iter()
        .filter(|f| !BUILTIN_FEATURES.contains(&f.feature_id.as_str()))
    {
        out.push(
            PluginStatus::new(&f.feature_id, true)
                .with_count("records", s.count(row, &ext_channel(&f.feature_id))?)
                .with_settings(f.settings.clone())
                .with_last_sync(f.last_sync.clone()),
        );
    }
    Ok(out)
}

/// `GET /api/v1/hierarchies/{hid}/status`
pub(crate) async fn status(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
) -> R {
    c.require_read()?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    let tid = c.tenant_id.clone();
    let h2 = h.clone();
    let plugins = db(&st, move |s| {
        let t = s
            .find_tenant(&tid)?
            .map(|t| t.use_intune_rbac)
            .unwrap_or(false);
        let f = s.features(h2.row)?;
        plugin_status(s, &h2, &f, t)
    })
    .await?;
    // Through a `Value`: the keys come out sorted, as they always have.
    let doc =
        serde_json::to_value(HierarchyStatus::new(&h.hierarchy_id, plugins)).unwrap_or(Value::Null);
    Ok(Json(doc).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/ext/{fid}/records`
pub(crate) async fn ext_records(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
    Query(q): Q,
) -> R {
    c.require_read()?;
    let page = Page::of(&q)?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    let (tid, hid2, ch) = (
        c.tenant_id.clone(),
        h.hierarchy_id.clone(),
        ext_channel(&fid),
    );
    let rows = db(&st, move |s| s.records(&tid, &ch, Some(&hid2))).await?;
    let total = rows.len() as u64;
    let mut records = ExtRecords::new(
        page.slice(rows)
            .iter()
            .map(|r| ExtRecord::new(&r.key, parse_body(r), util::unix_to_rfc3339(r.updated)))
            .collect(),
    );
    let returned = records.value.len();
    records.count = total;
    let mut doc = serde_json::to_value(records).unwrap_or(Value::Null);
    let path = format!("/api/v1/hierarchies/{}/ext/{fid}/records", h.hierarchy_id);
    if let Some(link) = page.next_link(&st, &path, &q, returned, total) {
        doc["@odata.nextLink"] = json!(link);
    }
    Ok(Json(doc).into_response())
}

fn parse_body(r: &RecordRow) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// The largest `$skiptoken` (an offset): far beyond any device count, and small enough that
/// offset arithmetic can't overflow and SQLite's signed OFFSET stays positive.
const MAX_SKIPTOKEN: u64 = 1 << 40;

/// `$skiptoken`: decimal digits only, 0 to [`MAX_SKIPTOKEN`].
fn parse_skiptoken(t: &str) -> Result<u64, ApiError> {
    Some(t)
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|n| *n <= MAX_SKIPTOKEN)
        .ok_or_else(|| ApiError::bad_request("invalid $skiptoken"))
}

/// The default and largest `$top` of every list.
pub const DEFAULT_TOP: u64 = 100;
/// See [`DEFAULT_TOP`].
pub const MAX_TOP: u64 = 1000;

/// One page of a list: `$top` (1 to [`MAX_TOP`], default [`DEFAULT_TOP`]) items from offset
/// `$skiptoken` (which comes from the previous page's `@odata.nextLink`). Every list of the
/// read API, the gateway and Graph pages the same way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub top: u64,
    pub skip: u64,
}

impl Page {
    pub fn of(q: &HashMap<String, String>) -> Result<Page, ApiError> {
        let top = match q.get("$top") {
            Some(t) => t
                .parse::<u64>()
                .ok()
                .filter(|t| (1..=MAX_TOP).contains(t))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "$top {t:?} must be an integer from 1 to {MAX_TOP}"
                    ))
                })?,
            None => DEFAULT_TOP,
        };
        let skip = match q.get("$skiptoken") {
            Some(t) => parse_skiptoken(t)?,
            None => 0,
        };
        Ok(Page { top, skip })
    }

    /// The link to the next page, when this one (`returned` items) does not reach `total`: the
    /// same path and other query parameters, the next offset.
    pub fn next_link(
        &self,
        st: &AppState,
        path: &str,
        q: &HashMap<String, String>,
        returned: usize,
        total: u64,
    ) -> Option<String> {
        if self.skip.saturating_add(returned as u64) >= total {
            return None;
        }
        let mut qs = vec![
            ("$top".to_string(), self.top.to_string()),
            (
                "$skiptoken".to_string(),
                self.skip.saturating_add(self.top).to_string(),
            ),
        ];
        let mut rest: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "$top" && *k != "$skiptoken")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rest.sort();
        qs.extend(rest);
        let enc = serde_urlencoded::to_string(&qs).unwrap_or_default();
        Some(format!("{}{path}?{enc}", st.base))
    }

    /// This page of `items` (the whole list, in order).
    pub fn slice<T>(&self, items: Vec<T>) -> Vec<T> {
        let skip = usize::try_from(self.skip).unwrap_or(usize::MAX);
        items
            .into_iter()
            .skip(skip)
            .take(self.top as usize)
            .collect()
    }

    /// `{"@odata.count", "value", "@odata.nextLink"?}` for this page of `items` (the whole
    /// list, in order), merged into `doc` (the answer's other fields).
    pub fn answer(
        &self,
        st: &AppState,
        path: &str,
        q: &HashMap<String, String>,
        items: Vec<Value>,
        mut doc: Map<String, Value>,
    ) -> Value {
        let total = items.len() as u64;
        let value = self.slice(items);
        if let Some(link) = self.next_link(st, path, q, value.len(), total) {
            doc.insert("@odata.nextLink".into(), json!(link));
        }
        doc.insert("@odata.count".into(), json!(total));
        doc.insert("value".into(), Value::Array(value));
        Value::Object(doc)
    }
}

/// The value of a device-list parameter, one of `allowed`; otherwise `400` naming the
/// parameter and every allowed value.
fn choice<'a>(
    q: &'a HashMap<String, String>,
    parameter: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, ApiError> {
    match q.get(parameter) {
        None => Ok(None),
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v.as_str())),
        Some(v) => Err(ApiError::bad_request(format!(
            "{parameter} {v:?} is not one of {}",
            allowed.join(", ")
        ))
        .with_details(json!({ "parameter": parameter }))),
    }
}

/// The filters and order of `GET /api/v1/devices` (without the page).
fn device_query(q: &HashMap<String, String>) -> Result<DeviceQuery, ApiError> {
    use cloudattach_model::rules::ComanagementState;
    let comanagement = choice(
        q,
        "comanagement",
        &["eligible", "scheduledForEnrollment", "comanaged", "none"],
    )?
    .map(|v| match v {
        "eligible" => ComanagementFilter::State(ComanagementState::Eligible),
        "scheduledForEnrollment" => {
            ComanagementFilter::State(ComanagementState::ScheduledForEnrollment)
        }
        "comanaged" => ComanagementFilter::State(ComanagementState::Comanaged),
        _ => ComanagementFilter::None,
    });
    let classes = [
        EligibilityClass::Comanaged,
        EligibilityClass::Eligible,
        EligibilityClass::EligibleButNotAzureAdJoined,
        EligibilityClass::NeedsOsUpdate,
        EligibilityClass::Ineligible,
    ]
    .map(EligibilityClass::as_str);
    let eligibility = choice(q, "eligibility", &classes)?.and_then(EligibilityClass::parse);
    let defender =
        choice(q, "defender", &["healthy", "unhealthy", "unreported"])?.map(|v| match v {
            "healthy" => DefenderFilter::Healthy,
            "unhealthy" => DefenderFilter::Unhealthy,
            _ => DefenderFilter::Unreported,
        });
    let orders = [
        ("name", DeviceSort::Name, false),
        ("name desc", DeviceSort::Name, true),
        ("last_uploaded", DeviceSort::LastUploaded, false),
        ("last_uploaded desc", DeviceSort::LastUploaded, true),
        ("resource_id", DeviceSort::ResourceId, false),
        ("resource_id desc", DeviceSort::ResourceId, true),
    ];
    let names: Vec<&str> = orders.iter().map(|o| o.0).collect();
    let (sort, desc) = choice(q, "$orderby", &names)?
        .and_then(|v| orders.iter().find(|o| o.0 == v))
        .map_or((DeviceSort::Default, false), |o| (o.1, o.2));
    Ok(DeviceQuery {
        hierarchy_id: q.get("hierarchy").cloned(),
        name: q.get("name").cloned(),
        comanagement,
        eligibility,
        defender,
        sort,
        desc,
        skip: 0,
        top: 0,
    })
}

/// `"healthy"`, `"unhealthy"` or `"unreported"`: a device's Defender health by the flags of its
/// `defender` record.
fn defender_health(flags: Option<i64>) -> &'static str {
    match flags {
        None => "unreported",
        Some(f) if f & FLAG_DEFENDER_UNHEALTHY != 0 => "unhealthy",
        Some(_) => "healthy",
    }
}

/// `GET /api/v1/devices?$top=&$skiptoken=&hierarchy=&name=&comanagement=&eligibility=&defender=&$orderby=`
pub(crate) async fn devices(State(st): St, Extension(c): Extension<Caller>, Query(q): Q) -> R {
    c.require_read()?;
    let page = Page::of(&q)?;
    let mut dq = device_query(&q)?;
    (dq.top, dq.skip) = (page.top, page.skip);
    let tid = c.tenant_id.clone();
    let (rows, total) = db(&st, move |s| s.device_page(&tid, &dq)).await?;
    let value: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut d = parse_body(&r.record);
            let eligibility = serde_json::from_slice::<cloudattach_model::Device>(&r.record.body)
                .map(|dev| {
                    let (class, reason) = explain_class(&dev);
                    json!({"class": class.as_str(), "reason": reason})
                })
                .unwrap_or(Value::Null);
            d["hierarchy_id"] = json!(r.record.hierarchy_id);
            d["last_uploaded"] = json!(util::unix_to_rfc3339(r.record.updated));
            d["eligibility"] = eligibility;
            d["comanagement_state"] = json!(r.comanagement_state);
            d["defender_health"] = json!(defender_health(r.defender_flags));
            d
        })
        .collect();
    let mut out = json!({"@odata.count": total, "value": value});
    if let Some(link) = page.next_link(&st, "/api/v1/devices", &q, rows.len(), total) {
        out["@odata.nextLink"] = json!(link);
    }
    Ok(Json(out).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/devices/{resource_id}`: everything the cloud holds for one
/// uploaded device — its record, Endpoint analytics, Defender and co-management records (each
/// `null` when the channel holds none), with when each last changed.
pub(crate) async fn device(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, rid)): Path<(String, String)>,
) -> R {
    c.require_read()?;
    let h = crate::gateway::find_hierarchy(&st, &c, &hid).await?;
    let key: i64 = rid
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{rid:?} is not a resource id (an integer)")))?;
    let row = h.row;
    let key = key.to_string();
    let rows = db(&st, move |s| {
        let mut out = Vec::new();
        for ch in ["devices", "analytics", "defender", "comanagement"] {
            out.push((ch, s.record(row, ch, &key)?));
        }
        Ok(out)
    })
    .await?;
    let Some(device) = rows[0].1.as_ref() else {
        return Err(ApiError::not_found(format!(
            "device {rid} is not uploaded to hierarchy {}",
            h.hierarchy_id
        )));
    };
    let mut out = json!({
        "hierarchy_id": h.hierarchy_id,
        "resource_id": rid.parse::<i64>().unwrap_or_default(),
        "device": parse_body(device),
        "last_uploaded": util::unix_to_rfc3339(device.updated),
    });
    for (ch, r) in &rows[1..] {
        out[*ch] = match r {
            Some(r) => {
                json!({"record": parse_body(r), "updated": util::unix_to_rfc3339(r.updated)})
            }
            None => Value::Null,
        };
    }
    Ok(Json(out).into_response())
}

/// `GET /api/v1/overview`
pub(crate) async fn overview(State(st): St, Extension(c): Extension<Caller>) -> R {
    c.require_read()?;
    let tid = c.tenant_id.clone();
    let env = st.env;
    let v = db(&st, move |s| {
        let t = s
            .find_tenant(&tid)?
            .ok_or_else(|| StoreError::Corrupt("tenant vanished".into()))?;
        let mut hs = Vec::new();
        for h in s.hierarchies(&tid)? {
            let f = s.features(h.row)?;
            let mut j = hierarchy_json(&h, &f);
            let mut counts = Map::new();
            for ch in ["devices", "analytics", "defender", "comanagement"] {
                counts.insert(ch.into(), json!(s.count(h.row, ch)?));
            }
            counts.insert(
                "comanagement_scheduled".into(),
                json!(s.count_tag(h.row, "comanagement", "scheduledForEnrollment")?),
            );
            counts.insert(
                "comanagement_enrolled".into(),
                json!(s.count_tag(h.row, "comanagement", "comanaged")?),
            );
            for x in f
                .iter()
                .filter(|x| !BUILTIN_FEATURES.contains(&x.feature_id.as_str()))
            {
                counts.insert(
                    format!("ext:{}", x.feature_id),
                    json!(s.count(h.row, &ext_channel(&x.feature_id))?),
                );
            }
            j["counts"] = Value::Object(counts);
            j["effective_authority"] = json!(effective_authority(&f, t.use_intune_rbac));
            j["connector"] = serde_json::to_value(crate::actions::health(
                &h.hierarchy_id,
                s.connector(h.row)?,
                util::now_unix(),
            ))
            .unwrap_or(Value::Null);
            hs.push(j);
        }
        Ok(json!({
            "tenant_id": t.id, "tenant_name": t.display_name, "domains": t.domains,
            "environment": env.as_str(), "use_intune_rbac": t.use_intune_rbac,
            "hierarchies": hs,
        }))
    })
    .await?;
    Ok(Json(v).into_response())
}

/// Device name and flags by (hierarchy id, key).
type DeviceIndex = HashMap<(String, String), (String, i64)>;

/// Device names and flags by (hierarchy, key).
fn device_index(s: &dyn Store, tid: &str, hid: Option<&str>) -> Result<DeviceIndex, StoreError> {
    // Names are the devices' tags and the Endpoint analytics eligibility is a flag, both
    // written at ingest: no body is read.
    Ok(s.record_tags(tid, "devices", hid)?
        .into_iter()
        .map(|(h, key, tag, flags)| {
            (
                (h, key),
                (tag.unwrap_or_default(), flags & FLAG_EA_ELIGIBLE),
            )
        })
        .collect())
}

fn linear_score(ms: f64, good: f64, poor: f64) -> f64 {
    if ms <= good {
        100.0
    } else if ms >= poor {
        0.0
    } else {
        100.0 * (poor - ms) / (poor - good)
    }
}

/// Startup score of one device: boot score (core boot 15 s → 100, 75 s → 0) and sign-in score
/// (group policy + desktop usable 10 s → 100, 70 s → 0), weighted equally.
pub fn startup_scores(a: &cloudattach_model::Analytics) -> (f64, f64) {
    let boot = linear_score(a.core_boot_ms as f64, 15_000.0, 75_000.0);
    let signin = linear_score(
        a.gp_logon_ms as f64 + a.desktop_usable_ms as f64,
        10_000.0,
        70_000.0,
    );
    (boot, signin)
}

/// App reliability score of a mean time to failure (minutes of use per crash):
/// `100 × m / (m + 1440)`; no crash → 100.
pub fn reliability_score(mttf_minutes: Option<f64>) -> f64 {
    match mttf_minutes {
        None => 100.0,
        Some(m) => 100.0 * m / (m + 1440.0),
    }
}

fn counted_crashes(daily: &[u32]) -> u64 {
    let start = daily.len().saturating_sub(14);
    daily[start..].iter().map(|c| u64::from((*c).min(10))).sum()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The Endpoint analytics report of a tenant (or one hierarchy): its scores and counts, and
/// the per-app rows of app reliability (all of them, ordered by app name), which the report's
/// `apps` route pages.
fn ea_compute(
    s: &dyn Store,
    tid: &str,
    hid: Option<&str>,
) -> Result<(Value, Vec<Value>), StoreError> {
    // The uploaded devices eligible for Endpoint analytics, by their indexed flag.
    let eligible_keys: std::collections::HashSet<(String, String)> = s
        .record_tags(tid, "devices", hid)?
        .into_iter()
        .filter(|(_, _, _, f)| f & FLAG_EA_ELIGIBLE != 0)
        .map(|(h, k, _, _)| (h, k))
        .collect();
    let enrolled = eligible_keys.len();
    let rows = s.records(tid, "analytics", hid)?;
    let mut boot = Vec::new();
    let mut signin = Vec::new();
    let mut rel = Vec::new();
    let mut apps: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in &rows {
        let Ok(a) = serde_json::from_slice::<AnalyticsRecord>(&r.body) else {
            continue;
        };
        let eligible = eligible_keys.contains(&(r.hierarchy_id.clone(), r.key.clone()));
        if !eligible {
            continue;
        }
        // Enrolled devices that have not reported yet count as enrolled, not as reporting.
        let Some(analytics) = &a.analytics else {
            continue;
        };
        let (b, si) = startup_scores(analytics);
        boot.push(b);
        signin.push(si);
        let app_ok = a
            .client_version
            .as_deref()
            .and_then(DottedVersion::parse)
            .is_some_and(|v| client::at_least(&v, client::APP_RELIABILITY));
        if app_ok && !analytics.apps.is_empty() {
            let (mut use_min, mut crashes) = (0u64, 0u64);
            for app in &analytics.apps {
                let cr = counted_crashes(&app.daily_crashes);
                use_min += u64::from(app.usage_minutes);
                crashes += cr;
                let e = apps.entry(app.name.clone()).or_default();
                e.0 += u64::from(app.usage_minutes);
                e.1 += cr;
                e.2 += 1;
            }
            rel.push(reliability_score(
                (crashes > 0).then(|| use_min as f64 / crashes as f64),
            ));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // Every score is computed from unrounded parts and rounded once, when it is shown.
    let startup_score =
        (boot.len() >= MIN_EA_DEVICES).then(|| 0.5 * mean(&boot) + 0.5 * mean(&signin));
    let startup = if let Some(score) = startup_score {
        json!({"status": "ok", "score": round1(score), "boot_score": round1(mean(&boot)),
               "sign_in_score": round1(mean(&signin)), "devices": boot.len()})
    } else {
        json!({"status": "insufficient data", "score": null, "devices": boot.len()})
    };
    let app_list: Vec<Value> = apps
        .iter()
        .map(|(name, (u, cr, n))| {
            let mttf = (*cr > 0).then(|| *u as f64 / *cr as f64);
            json!({"name": name, "usage_minutes": u, "crashes": cr, "devices": n,
                   "mttf_minutes": mttf.map(round1), "score": round1(reliability_score(mttf))})
        })
        .collect();
    let reliability_score = (rel.len() >= MIN_EA_DEVICES).then(|| mean(&rel));
    // The rows per app are a list of their own (`…/endpoint-analytics/apps`, paged): the
    // report keeps how many there are.
    let reliability = if let Some(score) = reliability_score {
        json!({"status": "ok", "score": round1(score), "devices": rel.len(), "app_count": app_list.len()})
    } else {
        json!({"status": "insufficient data", "score": null, "devices": rel.len(), "app_count": app_list.len()})
    };
    let scores: Vec<f64> = [startup_score, reliability_score]
        .into_iter()
        .flatten()
        .collect();
    let overall = if scores.is_empty() {
        Value::Null
    } else {
        json!(round1(mean(&scores)))
    };
    let doc = json!({
        "status": if boot.len() >= MIN_EA_DEVICES { "ok" } else { "insufficient data" },
        "minimum_devices": MIN_EA_DEVICES,
        "enrolled_devices": enrolled,
        "reporting_devices": boot.len(),
        "endpoint_analytics_score": overall,
        "startup_performance": startup,
        "app_reliability": reliability,
    });
    Ok((doc, app_list))
}

/// `GET /api/v1/reports/endpoint-analytics[?hierarchy=]`: the scores and counts.
pub(crate) async fn ea_report(State(st): St, Extension(c): Extension<Caller>, Query(q): Q) -> R {
    c.require_read()?;
    let tid = c.tenant_id.clone();
    let hid = q.get("hierarchy").cloned();
    let (doc, _) = db(&st, move |s| ea_compute(s, &tid, hid.as_deref())).await?;
    Ok(Json(doc).into_response())
}

/// `GET /api/v1/reports/endpoint-analytics/apps[?$top=&$skiptoken=&hierarchy=]`: app
/// reliability per app, paged like every list, ordered by app name.
pub(crate) async fn ea_apps(State(st): St, Extension(c): Extension<Caller>, Query(q): Q) -> R {
    c.require_read()?;
    let page = Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let hid = q.get("hierarchy").cloned();
    let (_, apps) = db(&st, move |s| ea_compute(s, &tid, hid.as_deref())).await?;
    let path = "/api/v1/reports/endpoint-analytics/apps";
    Ok(Json(page.answer(&st, path, &q, apps, Map::new())).into_response())
}

/// One device's Endpoint analytics scores: `status` (`reporting` or `not reporting`), and when
/// reporting `startup_score`, `boot_score`, `sign_in_score` and `app_reliability_score`
/// (`null` without app data or with a client older than app reliability needs) — the parts the
/// tenant's scores average.
pub(crate) fn device_scores(a: &AnalyticsRecord) -> Value {
    let Some(an) = &a.analytics else {
        return json!({"status": "not reporting"});
    };
    let (boot, signin) = startup_scores(an);
    let app_ok = a
        .client_version
        .as_deref()
        .and_then(DottedVersion::parse)
        .is_some_and(|v| client::at_least(&v, client::APP_RELIABILITY));
    let reliability = if app_ok && !an.apps.is_empty() {
        let (mut use_min, mut crashes) = (0u64, 0u64);
        for app in &an.apps {
            use_min += u64::from(app.usage_minutes);
            crashes += counted_crashes(&app.daily_crashes);
        }
        json!(round1(reliability_score(
            (crashes > 0).then(|| use_min as f64 / crashes as f64)
        )))
    } else {
        Value::Null
    };
    json!({"status": "reporting", "startup_score": round1(0.5 * boot + 0.5 * signin),
           "boot_score": round1(boot), "sign_in_score": round1(signin),
           "app_reliability_score": reliability})
}

/// `GET /api/v1/reports/endpoint-analytics/devices[?hierarchy=&name=&$top=&$skiptoken=]`: the
/// per-device view — each enrolled device (eligible, with an analytics record) with its
/// startup, boot, sign-in and app reliability scores, or `not reporting` when it has sent no
/// telemetry yet; in the order the devices are stored.
pub(crate) async fn ea_devices(State(st): St, Extension(c): Extension<Caller>, Query(q): Q) -> R {
    c.require_read()?;
    let page = Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let hid = q.get("hierarchy").cloned();
    let name = q
        .get("name")
        .map(|n| n.to_lowercase())
        .filter(|n| !n.is_empty());
    let items = db(&st, move |s| {
        let devs = device_index(s, &tid, hid.as_deref())?;
        let rows = s.records(&tid, "analytics", hid.as_deref())?;
        let mut v = Vec::new();
        for r in &rows {
            let Some((dname, flags)) = devs.get(&(r.hierarchy_id.clone(), r.key.clone())) else {
                continue;
            };
            if flags & FLAG_EA_ELIGIBLE == 0 {
                continue;
            }
            if name
                .as_ref()
                .is_some_and(|n| !dname.to_lowercase().starts_with(n))
            {
                continue;
            }
            let Ok(a) = serde_json::from_slice::<AnalyticsRecord>(&r.body) else {
                continue;
            };
            let mut d = json!({"hierarchy_id": r.hierarchy_id, "resource_id": a.resource_id,
                               "device_name": dname, "updated": util::unix_to_rfc3339(r.updated)});
            if let (Value::Object(d), Value::Object(sc)) = (&mut d, device_scores(&a)) {
                d.extend(sc);
            }
            v.push(d);
        }
        Ok(v)
    })
    .await?;
    let path = "/api/v1/reports/endpoint-analytics/devices";
    Ok(Json(page.answer(&st, path, &q, items, Map::new())).into_response())
}

type DefenderRow = (String, i64, String, cloudattach_model::DefenderState);

/// The Defender records of a tenant (or one hierarchy), with their devices' names when
/// `names` (for a name filter; otherwise [`fill_device_names`] names the page's rows only).
fn defender_rows(
    s: &dyn Store,
    tid: &str,
    hid: Option<&str>,
    names: bool,
) -> Result<Vec<DefenderRow>, StoreError> {
    let devs = if names {
        device_index(s, tid, hid)?
    } else {
        DeviceIndex::new()
    };
    let rows = s.records(tid, "defender", hid)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let d: DefenderRecord = serde_json::from_slice(&r.body).ok()?;
            let name = devs
                .get(&(r.hierarchy_id.clone(), r.key.clone()))
                .map(|x| x.0.clone())
                .unwrap_or_default();
            Some((r.hierarchy_id, d.resource_id, name, d.defender))
        })
        .collect())
}

/// `GET /api/v1/reports/defender/{report}[?hierarchy=]`: `unhealthy-endpoints`, `active-malware`,
/// `antivirus-agent-status`, `detected-malware`.
pub(crate) async fn defender_report(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(report): Path<String>,
    Query(q): Q,
) -> R {
    c.require_read()?;
    if ![
        "unhealthy-endpoints",
        "active-malware",
        "antivirus-agent-status",
        "detected-malware",
    ]
    .contains(&report.as_str())
    {
        return Err(ApiError::not_found(format!(
            "unknown Defender report {report:?}: unhealthy-endpoints, active-malware, antivirus-agent-status or detected-malware"
        )));
    }
    let page = Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let hid = q.get("hierarchy").cloned();
    let name = q
        .get("name")
        .map(|n| n.to_lowercase())
        .filter(|n| !n.is_empty());
    let names = name.is_some();
    let mut rows = db(&st, move |s| defender_rows(s, &tid, hid.as_deref(), names)).await?;
    if let Some(n) = name {
        rows.retain(|r| r.2.to_lowercase().starts_with(&n));
    }
    let (mut items, total, mut doc) = build_defender_report(&report, &rows, &page);
    drop(rows);
    if !names {
        let tid = c.tenant_id.clone();
        items = db(&st, move |s| fill_device_names(s, &tid, items)).await?;
    }
    let path = format!("/api/v1/reports/defender/{report}");
    if let Some(link) = page.next_link(&st, &path, &q, items.len(), total) {
        doc.insert("@odata.nextLink".into(), json!(link));
    }
    doc.insert("@odata.count".into(), json!(total));
    doc.insert("value".into(), Value::Array(items));
    Ok(Json(Value::Object(doc)).into_response())
}

/// Sets the `device_name` of each item (that has one) from its device's record: the names of
/// one page, looked up one by one instead of indexing every device of the tenant.
fn fill_device_names(
    s: &dyn Store,
    tid: &str,
    mut items: Vec<Value>,
) -> Result<Vec<Value>, StoreError> {
    let mut rows: HashMap<String, Option<i64>> = HashMap::new();
    for it in &mut items {
        let Some(o) = it.as_object_mut() else {
            continue;
        };
        if !o.contains_key("device_name") {
            continue;
        }
        let (Some(h), Some(rid)) = (
            o.get("hierarchy_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            o.get("resource_id").and_then(Value::as_i64),
        ) else {
            continue;
        };
        let row = match rows.get(&h) {
            Some(r) => *r,
            None => {
                let r = s.hierarchy(tid, &h)?.map(|x| x.row);
                rows.insert(h.clone(), r);
                r
            }
        };
        let name = match row {
            Some(row) => s
                .record(row, "devices", &rid.to_string())?
                .and_then(|d| d.tag),
            None => None,
        };
        o.insert("device_name".into(), json!(name.unwrap_or_default()));
    }
    Ok(items)
}

/// The page of a list an iterator yields, turned into JSON (only the page's items are), and
/// the list's length.
fn paged<T>(it: impl Iterator<Item = T>, page: &Page, f: impl Fn(T) -> Value) -> (Vec<Value>, u64) {
    let skip = usize::try_from(page.skip).unwrap_or(usize::MAX);
    let top = page.top as usize;
    let mut total = 0u64;
    let mut v = Vec::new();
    for (k, x) in it.enumerate() {
        total += 1;
        if k >= skip && v.len() < top {
            v.push(f(x));
        }
    }
    (v, total)
}

/// A Defender report: the page of its rows, how many rows it has, and its other fields.
fn build_defender_report(
    report: &str,
    rows: &[(String, i64, String, cloudattach_model::DefenderState)],
    page: &Page,
) -> (Vec<Value>, u64, Map<String, Value>) {
    let doc = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    match report {
        "unhealthy-endpoints" => {
            let sel = rows.iter().filter_map(|r| {
                let i = crate::ingest::defender_issues(&r.3);
                (!i.is_empty()).then_some((r, i))
            });
            let (v, total) = paged(sel, page, |((h, id, name, d), i)| {
                json!({"hierarchy_id": h, "resource_id": id, "device_name": name,
                       "computer_state": d.computer_state, "product_status": d.product_status, "issues": i})
            });
            (
                v,
                total,
                doc(json!({"report": report, "devices_reported": rows.len()})),
            )
        }
        "active-malware" => {
            let sel = rows.iter().flat_map(|(h, id, name, d)| {
                d.detections
                    .iter()
                    .filter(|x| x.current_status == "active")
                    .map(move |x| (h, id, name, x))
            });
            let (v, total) = paged(sel, page, |(h, id, name, x)| {
                json!({"hierarchy_id": h, "resource_id": id, "device_name": name, "threat_id": x.threat_id,
                       "threat_name": x.threat_name, "category": x.category, "severity": x.severity,
                       "initial_detection_time": x.initial_detection_time,
                       "number_of_detections": x.number_of_detections})
            });
            (v, total, doc(json!({"report": report})))
        }
        "antivirus-agent-status" => {
            let mut summary = BTreeMap::<&str, u64>::new();
            for (_, _, _, d) in rows {
                *summary
                    .entry(if d.defender_enabled && d.rtp_enabled {
                        "protected"
                    } else {
                        "unprotected"
                    })
                    .or_default() += 1;
                if d.signature_out_of_date {
                    *summary.entry("signature_out_of_date").or_default() += 1;
                }
                if d.mde_onboarding_state.as_deref() == Some("onboarded") {
                    *summary.entry("mde_onboarded").or_default() += 1;
                }
            }
            let (v, total) = paged(rows.iter(), page, |(h, id, name, d)| {
                let mut j = serde_json::to_value(d).unwrap_or_default();
                if let Some(o) = j.as_object_mut() {
                    o.remove("detections");
                    o.insert("hierarchy_id".into(), json!(h));
                    o.insert("resource_id".into(), json!(id));
                    o.insert("device_name".into(), json!(name));
                }
                j
            });
            (v, total, doc(json!({"report": report, "summary": summary})))
        }
        _ => {
            let mut by: BTreeMap<i64, (Value, u64, u64, bool)> = BTreeMap::new();
            for (_, _, _, d) in rows {
                let mut seen = std::collections::HashSet::new();
                for x in &d.detections {
                    let e = by.entry(x.threat_id).or_insert_with(|| {
                        (json!({"threat_id": x.threat_id, "threat_name": x.threat_name, "category": x.category,
                                "severity": x.severity}), 0, 0, false)
                    });
                    if seen.insert(x.threat_id) {
                        e.1 += 1;
                    }
                    e.2 += u64::from(x.number_of_detections);
                    e.3 |= x.current_status == "active";
                }
            }
            let (v, total) = paged(by.into_values(), page, |(mut j, devices, n, active)| {
                j["device_count"] = json!(devices);
                j["detection_count"] = json!(n);
                j["active"] = json!(active);
                j
            });
            (v, total, doc(json!({"report": report})))
        }
    }
}

/// `GET /api/v1/comanagement/devices[?hierarchy=]`
pub(crate) async fn comanagement_devices(
    State(st): St,
    Extension(c): Extension<Caller>,
    Query(q): Q,
) -> R {
    c.require_read()?;
    let page = Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let hid = q.get("hierarchy").cloned();
    let (items, total, summary) = db(&st, move |s| {
        // The state is each record's tag: the summary needs no body, and only the page's
        // records are read whole.
        let tags = s.record_tags(&tid, "comanagement", hid.as_deref())?;
        let mut summary = BTreeMap::<String, u64>::new();
        for (_, _, tag, _) in &tags {
            if let Some(t) = tag {
                *summary.entry(t.clone()).or_default() += 1;
            }
        }
        let mut rows: Vec<RecordRow> = Vec::new();
        for (h, key, _, _) in tags
            .iter()
            .skip(usize::try_from(page.skip).unwrap_or(usize::MAX))
            .take(page.top as usize)
        {
            // A record offboarded since the tags were read is simply not on the page.
            if let Some(hrow) = s.hierarchy(&tid, h)?.map(|x| x.row)
                && let Some(r) = s.record(hrow, "comanagement", key)?
            {
                rows.push(r);
            }
        }
        let mut v = Vec::with_capacity(rows.len());
        for r in &rows {
            let Ok(c) = serde_json::from_slice::<ComanagementRecord>(&r.body) else {
                continue;
            };
            let name = match c.name.clone() {
                Some(n) => Some(n),
                None => {
                    let row = s.hierarchy(&tid, &r.hierarchy_id)?.map(|h| h.row);
                    match row {
                        Some(row) => s.record(row, "devices", &r.key)?.and_then(|d| d.tag),
                        None => None,
                    }
                }
            };
            let state = c.state.as_str();
            let monitoring = match state {
                "eligible" => "Eligible",
                "scheduledForEnrollment" => "Scheduled",
                _ => "Enrolled",
            };
            v.push(json!({"hierarchy_id": r.hierarchy_id, "resource_id": c.resource_id, "device_name": name,
                          "state": state, "monitoring_state": monitoring,
                          "updated": util::unix_to_rfc3339(r.updated)}));
        }
        Ok::<_, StoreError>((v, tags.len() as u64, summary))
    })
    .await?;
    let mut doc = Map::new();
    let path = "/api/v1/comanagement/devices";
    if let Some(link) = page.next_link(&st, path, &q, items.len(), total) {
        doc.insert("@odata.nextLink".into(), json!(link));
    }
    doc.insert("summary".into(), json!(summary));
    doc.insert("@odata.count".into(), json!(total));
    doc.insert("value".into(), Value::Array(items));
    Ok(Json(Value::Object(doc)).into_response())
}

#[allow(dead_code)]
fn _assert_send(_: Arc<AppState>) {}

//! The admin center's pages: server-rendered HTML (maud), each reading the API as the
//! signed-in person through [`Console::api`].

use super::{Console, charts, html_page, redirect};
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Value, json};
use std::collections::HashMap;

type Q = Query<HashMap<String, String>>;

/// Devices per page.
pub(crate) const PAGE_SIZE: u64 = 50;
/// The highest page number a page takes: beyond any list's end, and far from overflowing.
const MAX_PAGE: u64 = 1 << 30;

/// A 1-based page number from a query parameter: 1 when missing or invalid.
fn page_of(q: &HashMap<String, String>, key: &str) -> u64 {
    q.get(key)
        .and_then(|p| p.trim().parse::<u64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
        .min(MAX_PAGE)
}

const NAV: [(&str, &str, &str); 6] = [
    ("home", "/admin/", "Home"),
    ("devices", "/admin/devices", "Devices"),
    ("ea", "/admin/endpoint-analytics", "Endpoint analytics"),
    ("antivirus", "/admin/antivirus", "Antivirus reports"),
    ("comanagement", "/admin/comanagement", "Co-management"),
    ("tenant", "/admin/tenant", "Tenant administration"),
];

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " — cloudattach admin center" }
        link rel="stylesheet" href="/admin/static/console.css";
        script src="/admin/static/console.js" defer {}
    }
}

/// A page of the console: header, navigation, content.
fn shell(c: &Console, active: &str, title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "cloudattach admin center" }
                    span.tenant title="Tenant" { (c.tenant_name) }
                    span.spacer {}
                    span.who id="signed-in-as" { (c.upn) }
                    form.inline method="post" action="/admin/signout" {
                        input type="hidden" name="csrf" value=(c.csrf);
                        button.link type="submit" id="signout" { "Sign out" }
                    }
                }
                div.frame {
                    nav aria-label="Admin center" {
                        ul {
                            @for (id, href, label) in NAV {
                                li { a href=(href) aria-current=[(id == active).then_some("page")] { (label) } }
                            }
                        }
                    }
                    main id="main" tabindex="-1" {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
    };
    html_page(StatusCode::OK, page.into_string())
}

/// A page outside the signed-in frame.
pub(crate) fn message_page(title: &str, message: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.plain {
                main id="main" {
                    h1 { (title) }
                    p role="alert" { (message) }
                    p { a href="/admin/" { "Go to the admin center" } }
                }
            }
        }
    }
    .into_string()
}

/// The page after signing out, or when a sign-in failed or a session ended.
pub(crate) fn signed_out_page(message: Option<&str>) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head("Sign in")) }
            body.plain {
                main id="main" {
                    h1 { "cloudattach admin center" }
                    @if let Some(m) = message { p.err role="alert" id="signin-message" { (m) } }
                    @else { p id="signin-message" { "You have signed out." } }
                    p { a.button href="/admin/signin" id="signin-link" { "Sign in" } }
                }
            }
        }
    }
    .into_string()
}

/// The page of an API error: 404 for what the tenant does not hold, the reason for a refusal.
fn api_error(c: &Console, active: &str, e: ApiError) -> Response {
    let (title, what) = match e.status {
        StatusCode::NOT_FOUND => ("Not found", e.message.clone()),
        StatusCode::FORBIDDEN => (
            "You can't see this",
            format!(
                "Your account {} is signed in, but its roles do not allow this: {}",
                c.upn, e.message
            ),
        ),
        StatusCode::BAD_REQUEST => ("Check what you entered", e.message.clone()),
        _ => ("Something went wrong", e.message.clone()),
    };
    let mut r = shell(
        c,
        active,
        title,
        html! { p.err role="alert" id="error" { (what) } },
    );
    *r.status_mut() = e.status;
    r
}

/// A time as people read it: `2026-12-04 20:52 UTC` for an RFC 3339 UTC time, else as is.
fn when(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.ends_with('Z') && t.as_bytes().get(10) == Some(&b'T') => {
            match (t.get(..10), t.get(11..16)) {
                (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
                _ => s(v),
            }
        }
        _ => s(v),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) if s.is_empty() => "—".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "Yes".into(),
        Value::Bool(false) => "No".into(),
        other => other.to_string(),
    }
}

/// `Windows 10.0.19045`, `Windows Server 10.0.17763`: the OS family and build, short enough
/// for a table (the full name is the cell's title).
fn short_os(os: &Value, build: &Value) -> String {
    let os = os.as_str().unwrap_or("");
    let family = if os.contains("Server") {
        "Windows Server"
    } else if os.contains("Windows") {
        "Windows"
    } else {
        return s(&Value::String(os.to_string()));
    };
    match build.as_str() {
        Some(b) if !b.is_empty() => format!("{family} {b}"),
        _ => family.to_string(),
    }
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn state_label(state: &str) -> &str {
    match state {
        "eligible" => "Eligible",
        "scheduledForEnrollment" => "Scheduled",
        "comanaged" => "Enrolled",
        "none" => "Not reported",
        other => other,
    }
}

fn class_label(class: &str) -> &str {
    match class {
        "comanaged" => "Co-managed",
        "eligible" => "Eligible",
        "eligibleButNotAzureAdJoined" => "Eligible, not Entra joined",
        "needsOsUpdate" => "Needs OS update",
        "ineligible" => "Not eligible",
        other => other,
    }
}

fn svg(markup: String) -> Markup {
    PreEscaped(markup)
}

// ---------------------------------------------------------------------------------------------
// Home

/// `GET /admin/`
pub(crate) async fn home(c: Console) -> Response {
    let o = match c.get("/api/v1/overview", &[]).await {
        Ok(o) => o,
        Err(e) if e.status == StatusCode::FORBIDDEN => return no_role(&c, &e),
        Err(e) => return api_error(&c, "home", e),
    };
    let hs = o["hierarchies"].as_array().cloned().unwrap_or_default();
    let body = html! {
        section aria-labelledby="tenant-h" {
            h2 id="tenant-h" { "Tenant" }
            dl.props {
                dt { "Name" } dd id="tenant-name" { (s(&o["tenant_name"])) }
                dt { "Tenant ID" } dd { code { (s(&o["tenant_id"])) } }
                dt { "Domains" } dd { (o["domains"].as_array().map(|d| d.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                dt { "Environment" } dd { (s(&o["environment"])) }
                dt { "Use Intune RBAC" } dd id="use-intune-rbac" { (if o["use_intune_rbac"].as_bool() == Some(true) { "On" } else { "Off" }) }
            }
        }
        section aria-labelledby="h-h" {
            h2 id="h-h" { "Attached hierarchies (" span id="hierarchy-count" { (hs.len()) } ")" }
            @if hs.is_empty() {
                p { "No hierarchy is attached yet. Run " code { "cloudattach apply" } " on a site to attach it." }
            }
            @for h in &hs {
                @let hid = s(&h["hierarchy_id"]);
                article.card data-hierarchy=(hid) {
                    h3 { (s(&h["site_code"])) " — " (s(&h["site_name"])) }
                    dl.props {
                        dt { "Hierarchy ID" } dd { code { (hid) } }
                        dt { "Version" } dd { (s(&h["site_version"])) }
                        dt { "Environment" } dd { (s(&h["environment"])) }
                        dt { "Owning app" } dd { code { (s(&h["app_id"])) } }
                        dt { "Effective RBAC authority" } dd.authority { (authority_label(h["effective_authority"].as_str().unwrap_or(""))) }
                        dt { "Devices uploaded" } dd.devices-uploaded { (count(&h["counts"]["devices"])) }
                    }
                    h4 { "Connector" }
                    (connector(&h["connector"]))
                    h4 { "Enabled features" }
                    @let features = h["features"].as_object().cloned().unwrap_or_default();
                    @if features.is_empty() { p { "None." } }
                    table.features {
                        thead { tr { th scope="col" { "Feature" } th scope="col" { "Settings" } } }
                        tbody {
                            @for (id, settings) in &features {
                                tr { td { (id) } td { (settings_text(settings)) } }
                            }
                        }
                    }
                    p { a.danger href=(format!("/admin/hierarchies/{hid}/offboard")) { "Offboard this hierarchy…" } }
                }
            }
        }
    };
    shell(&c, "home", "Home", body)
}

fn authority_label(a: &str) -> String {
    match a {
        "intune" => "Intune only (Use Intune RBAC)".into(),
        "configmgr+intune" => "Configuration Manager and Intune (both must allow)".into(),
        other => other.into(),
    }
}

fn settings_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) if m.is_empty() => "defaults".into(),
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k} = {}", s(v)))
            .collect::<Vec<_>>()
            .join("; "),
        None => s(v),
    }
}

fn connector(c: &Value) -> Markup {
    let healthy = c["healthy"].as_bool() == Some(true);
    html! {
        p.health.(if healthy { "ok" } else { "bad" }) {
            strong { (if healthy { "Healthy" } else { "Unhealthy" }) }
            @if let Some(r) = c["reason"].as_str() { " — " (r) }
        }
        dl.props {
            dt { "Last upload" } dd { (when(&c["last_upload"])) }
            dt { "Last heartbeat" } dd { (when(&c["last_heartbeat"])) }
            dt { "Connector" } dd { (s(&c["connector_id"])) " " (s(&c["version"])) }
        }
    }
}

/// The page of an account without a role that may read the tenant.
fn no_role(c: &Console, e: &ApiError) -> Response {
    let mut r = shell(
        c,
        "home",
        "Home",
        html! {
            div.notice role="alert" id="no-role" {
                p { strong { "Your account " (c.upn) " has no role that may read this tenant." } }
                p { (e.message) }
                p { "Ask a Global Administrator to assign you an Intune role (Tenant administration > Roles) or a directory role." }
            }
        },
    );
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// `GET /admin/hierarchies/{hid}/offboard`: what offboarding removes, and the confirmation.
pub(crate) async fn offboard_confirm(c: Console, Path(hid): Path<String>) -> Response {
    let h = match c
        .get(&format!("/api/v1/hierarchies/{}", enc(&hid)), &[])
        .await
    {
        Ok(h) => h,
        Err(e) => return api_error(&c, "home", e),
    };
    let hid = s(&h["hierarchy_id"]);
    let body = html! {
        p { "Offboarding removes hierarchy " strong { (s(&h["site_code"])) " — " (s(&h["site_name"])) } " (" code { (hid) } ") from the tenant, with every device, report record and queued action it uploaded. The site keeps its own data; its app registration stays in the directory until you delete it." }
        p { "This cannot be undone. The site can attach again with " code { "cloudattach apply" } "." }
        form method="post" action=(format!("/admin/hierarchies/{hid}/offboard")) {
            input type="hidden" name="csrf" value=(c.csrf);
            label for="confirm" { "Type the site code (" (s(&h["site_code"])) ") to confirm" }
            input type="text" id="confirm" name="confirm" autocomplete="off" required;
            div.buttons {
                a.button href="/admin/" { "Cancel" }
                button.danger type="submit" id="offboard" { "Offboard" }
            }
        }
    };
    shell(&c, "home", "Offboard a hierarchy", body)
}

fn form_of(body: &Bytes) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn enc(s: &str) -> String {
    url_escape(s)
}

/// Percent-encodes a path segment.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `POST /admin/hierarchies/{hid}/offboard`
pub(crate) async fn offboard(
    c: Console,
    Path(hid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form_of(&body);
    if let Err(r) = c.check_post(&headers, &f) {
        return *r;
    }
    let path = format!("/api/v1/hierarchies/{}", enc(&hid));
    let h = match c.get(&path, &[]).await {
        Ok(h) => h,
        Err(e) => return api_error(&c, "home", e),
    };
    let code = h["site_code"].as_str().unwrap_or("");
    if !f
        .get("confirm")
        .is_some_and(|x| x.trim().eq_ignore_ascii_case(code))
    {
        return api_error(
            &c,
            "home",
            ApiError::bad_request(format!(
                "type the site code {code} to confirm; nothing was offboarded"
            )),
        );
    }
    match c.api(Method::DELETE, &path, None).await {
        Ok(_) => redirect("/admin/?offboarded=1"),
        Err(e) => api_error(&c, "home", e),
    }
}

// ---------------------------------------------------------------------------------------------
// Devices

/// The filters and order of the Devices page, as the page's query and as the API's.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceQuery {
    pub q: String,
    pub hierarchy: String,
    pub comanagement: String,
    pub eligibility: String,
    pub defender: String,
    pub sort: String,
    pub page: u64,
}

const SORTS: [(&str, &str); 6] = [
    ("name", "name"),
    ("-name", "name desc"),
    ("uploaded", "last_uploaded"),
    ("-uploaded", "last_uploaded desc"),
    ("id", "resource_id"),
    ("-id", "resource_id desc"),
];

impl DeviceQuery {
    fn of(q: &HashMap<String, String>) -> DeviceQuery {
        let g = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        DeviceQuery {
            q: g("q"),
            hierarchy: g("hierarchy"),
            comanagement: g("comanagement"),
            eligibility: g("eligibility"),
            defender: g("defender"),
            sort: g("sort"),
            page: page_of(q, "page"),
        }
    }

    /// The filters that are set, the name search under `name_key`.
    fn filters(&self, name_key: &'static str) -> Vec<(&'static str, String)> {
        [
            (name_key, &self.q),
            ("hierarchy", &self.hierarchy),
            ("comanagement", &self.comanagement),
            ("eligibility", &self.eligibility),
            ("defender", &self.defender),
        ]
        .into_iter()
        .filter(|(_, x)| !x.is_empty())
        .map(|(k, x)| (k, x.clone()))
        .collect()
    }

    /// The API's query parameters (without paging).
    fn api(&self) -> Vec<(&'static str, String)> {
        let mut v = self.filters("name");
        if let Some((_, o)) = SORTS.iter().find(|(k, _)| *k == self.sort) {
            v.push(("$orderby", o.to_string()));
        }
        v
    }

    /// This page's link with some fields changed.
    fn link(&self, page: u64, sort: Option<&str>) -> String {
        let mut v = self.filters("q");
        let sort = sort.unwrap_or(&self.sort);
        if !sort.is_empty() {
            v.push(("sort", sort.to_string()));
        }
        if page > 1 {
            v.push(("page", page.to_string()));
        }
        let qs = serde_urlencoded::to_string(&v).unwrap_or_default();
        if qs.is_empty() {
            "/admin/devices".into()
        } else {
            format!("/admin/devices?{qs}")
        }
    }
}

async fn hierarchy_options(c: &Console) -> Vec<(String, String)> {
    c.get("/api/v1/hierarchies", &[("$top", "1000".into())])
        .await
        .ok()
        .and_then(|v| v["value"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|h| {
            (
                s(&h["hierarchy_id"]),
                format!("{} — {}", s(&h["site_code"]), s(&h["site_name"])),
            )
        })
        .collect()
}

fn select(id: &str, label: &str, current: &str, options: &[(String, String)]) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(id) {
                option value="" selected[current.is_empty()] { "All" }
                @for (v, l) in options {
                    option value=(v) selected[current == v] { (l) }
                }
            }
        }
    }
}

fn opts(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `GET /admin/devices`
pub(crate) async fn devices(c: Console, Query(q): Q) -> Response {
    let dq = DeviceQuery::of(&q);
    let mut params = dq.api();
    params.push(("$top", PAGE_SIZE.to_string()));
    params.push(("$skiptoken", ((dq.page - 1) * PAGE_SIZE).to_string()));
    let v = match c.get("/api/v1/devices", &params).await {
        Ok(v) => v,
        Err(e) => return api_error(&c, "devices", e),
    };
    let total = count(&v["@odata.count"]);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let rows = v["value"].as_array().cloned().unwrap_or_default();
    let hierarchies = hierarchy_options(&c).await;
    let site_codes: HashMap<String, String> = hierarchies
        .iter()
        .map(|(id, label)| {
            (
                id.clone(),
                label.split(" — ").next().unwrap_or("").to_string(),
            )
        })
        .collect();
    let sort_link = |key: &str, label: &str| {
        let (next, mark, aria) = if dq.sort == key {
            (format!("-{key}"), " ▲", "ascending")
        } else if dq.sort == format!("-{key}") {
            (key.to_string(), " ▼", "descending")
        } else {
            (key.to_string(), "", "none")
        };
        html! { th scope="col" aria-sort=(aria) { a href=(dq.link(1, Some(&next))) { (label) (mark) } } }
    };
    let csv = dq
        .link(1, None)
        .replacen("/admin/devices", "/admin/devices.csv", 1);
    let body = html! {
        form.filters method="get" action="/admin/devices" role="search" {
            div.field {
                label for="q" { "Search by name" }
                input type="search" id="q" name="q" value=(dq.q) placeholder="Device name starts with…";
            }
            (select("hierarchy", "Hierarchy", &dq.hierarchy, &hierarchies))
            (select("comanagement", "Co-management", &dq.comanagement, &opts(&[("eligible", "Eligible"), ("scheduledForEnrollment", "Scheduled"), ("comanaged", "Enrolled"), ("none", "Not reported")])))
            (select("eligibility", "Eligibility", &dq.eligibility, &opts(&[("comanaged", "Co-managed"), ("eligible", "Eligible"), ("eligibleButNotAzureAdJoined", "Eligible, not Entra joined"), ("needsOsUpdate", "Needs OS update"), ("ineligible", "Not eligible")])))
            (select("defender", "Defender", &dq.defender, &opts(&[("healthy", "Healthy"), ("unhealthy", "Unhealthy"), ("unreported", "Not reported")])))
            @if !dq.sort.is_empty() { input type="hidden" name="sort" value=(dq.sort); }
            div.field.actions { button type="submit" id="apply-filters" { "Search" } }
        }
        p.summary {
            span id="device-total" { (total) } " devices · page " span id="page-number" { (dq.page) } " of " span id="page-count" { (pages) }
            " · " a href=(csv) id="export-csv" download { "Export all " (total) " to CSV" }
        }
        div.table-wrap {
            table id="devices" {
                caption.visually-hidden { "Devices, page " (dq.page) " of " (pages) }
                thead { tr {
                    (sort_link("name", "Name"))
                    th scope="col" { "Hierarchy" }
                    (sort_link("id", "Resource ID"))
                    th scope="col" { "OS" }
                    th scope="col" { "Client" }
                    th scope="col" { "Co-management" }
                    th scope="col" { "Eligibility" }
                    th scope="col" { "Defender" }
                    (sort_link("uploaded", "Last uploaded"))
                } }
                tbody {
                    @for d in &rows {
                        @let hid = s(&d["hierarchy_id"]);
                        @let rid = s(&d["resource_id"]);
                        tr {
                            td { a href=(format!("/admin/hierarchies/{hid}/devices/{rid}")) { (s(&d["name"])) } }
                            td { abbr title=(hid) { (site_codes.get(&hid).cloned().unwrap_or_else(|| hid.chars().take(8).collect())) } }
                            td { (rid) }
                            td title=(s(&d["os"])) { (short_os(&d["os"], &d["os_build"])) }
                            td { (s(&d["client_version"])) }
                            td { (state_label(d["comanagement_state"].as_str().unwrap_or("none"))) }
                            td { (class_label(d["eligibility"]["class"].as_str().unwrap_or("—"))) }
                            td { (s(&d["defender_health"])) }
                            td { (when(&d["last_uploaded"])) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p id="no-devices" { "No device matches." } }
        nav.pager aria-label="Pages" {
            @if dq.page > 1 {
                a href=(dq.link(1, None)) id="first-page" { "« First" }
                a href=(dq.link(dq.page - 1, None)) id="prev-page" rel="prev" { "‹ Previous" }
            }
            @if dq.page < pages {
                a href=(dq.link(dq.page + 1, None)) id="next-page" rel="next" { "Next ›" }
                a href=(dq.link(pages, None)) id="last-page" { "Last »" }
            }
            form.inline method="get" action="/admin/devices" {
                @for (k, x) in [("q", &dq.q), ("hierarchy", &dq.hierarchy), ("comanagement", &dq.comanagement), ("eligibility", &dq.eligibility), ("defender", &dq.defender), ("sort", &dq.sort)] {
                    @if !x.is_empty() { input type="hidden" name=(k) value=(x); }
                }
                label for="goto" { "Go to page" }
                input.narrow type="number" id="goto" name="page" min="1" max=(pages) value=(dq.page);
                button type="submit" { "Go" }
            }
        }
    };
    shell(&c, "devices", "Devices", body)
}

fn csv_field(s: &str) -> String {
    // A leading =, +, - or @ would be a formula in a spreadsheet.
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `GET /admin/devices.csv`: every device the filters select, streamed in pages of 1,000.
pub(crate) async fn devices_csv(c: Console, Query(q): Q) -> Response {
    let dq = DeviceQuery::of(&q);
    // The first page answers errors before the download starts.
    let params = dq.api();
    let first = {
        let mut p = params.clone();
        p.push(("$top", "1000".into()));
        match c.get("/api/v1/devices", &p).await {
            Ok(v) => v,
            Err(e) => return api_error(&c, "devices", e),
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let header = "hierarchy_id,resource_id,name,os,os_build,client_version,join_type,\
                      comanagement_state,eligibility,defender_health,last_uploaded\n";
        if tx
            .send(Ok(Bytes::from_static(header.as_bytes())))
            .await
            .is_err()
        {
            return;
        }
        let mut page = first;
        let mut skip = 0u64;
        loop {
            let rows = page["value"].as_array().cloned().unwrap_or_default();
            let mut out = String::with_capacity(rows.len() * 160);
            for d in &rows {
                let cells = [
                    s(&d["hierarchy_id"]),
                    s(&d["resource_id"]),
                    d["name"].as_str().unwrap_or("").to_string(),
                    d["os"].as_str().unwrap_or("").to_string(),
                    d["os_build"].as_str().unwrap_or("").to_string(),
                    d["client_version"].as_str().unwrap_or("").to_string(),
                    d["join_type"].as_str().unwrap_or("").to_string(),
                    d["comanagement_state"].as_str().unwrap_or("").to_string(),
                    d["eligibility"]["class"].as_str().unwrap_or("").to_string(),
                    d["defender_health"].as_str().unwrap_or("").to_string(),
                    d["last_uploaded"].as_str().unwrap_or("").to_string(),
                ];
                let line: Vec<String> = cells.iter().map(|x| csv_field(x)).collect();
                out.push_str(&line.join(","));
                out.push('\n');
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            if page.get("@odata.nextLink").is_none() || rows.is_empty() {
                return;
            }
            skip += rows.len() as u64;
            let mut p = params.clone();
            p.push(("$top", "1000".into()));
            p.push(("$skiptoken", skip.to_string()));
            page = match c.get("/api/v1/devices", &p).await {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"devices.csv\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Device

fn record_props(v: &Value, skip: &[&str]) -> Markup {
    html! {
        dl.props {
            @if let Some(m) = v.as_object() {
                @for (k, x) in m {
                    @if !skip.contains(&k.as_str()) {
                        dt { (k) }
                        dd { @if x.is_object() || x.is_array() { code.json { (x.to_string()) } } @else { (s(x)) } }
                    }
                }
            }
        }
    }
}

/// `GET /admin/hierarchies/{hid}/devices/{rid}`
pub(crate) async fn device(c: Console, Path((hid, rid)): Path<(String, String)>) -> Response {
    let path = format!("/api/v1/hierarchies/{}/devices/{}", enc(&hid), enc(&rid));
    let v = match c.get(&path, &[]).await {
        Ok(v) => v,
        Err(e) => return api_error(&c, "devices", e),
    };
    let hid = s(&v["hierarchy_id"]);
    let rid = s(&v["resource_id"]);
    let d = &v["device"];
    let name = s(&d["name"]);
    let declared = match c
        .get(&format!("/api/v1/hierarchies/{hid}/actions/declared"), &[])
        .await
    {
        Ok(x) => x["value"].as_array().cloned().unwrap_or_default(),
        Err(e) => return api_error(&c, "devices", e),
    };
    let recent = match c
        .get(
            "/api/v1/actions",
            &[
                ("hierarchy", hid.clone()),
                ("resource_id", rid.clone()),
                ("$top", "10".into()),
            ],
        )
        .await
    {
        Ok(x) => x["value"].as_array().cloned().unwrap_or_default(),
        Err(e) => return api_error(&c, "devices", e),
    };
    let overview = match c.get("/api/v1/overview", &[]).await {
        Ok(o) => o,
        Err(e) => return api_error(&c, "devices", e),
    };
    let h = overview["hierarchies"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["hierarchy_id"] == json!(hid)))
        .cloned()
        .unwrap_or(Value::Null);
    let eligibility = eligibility_of(d);
    let analytics = &v["analytics"]["record"];
    let ea = ea_device_scores(analytics);
    let device_actions: Vec<&Value> = declared
        .iter()
        .filter(|a| a["target"] == json!("device"))
        .collect();
    let body = html! {
        p.crumbs { a href="/admin/devices" { "Devices" } " › " (name) }
        div.grid {
            section aria-labelledby="props-h" {
                h2 id="props-h" { "Properties" }
                dl.props {
                    dt { "Hierarchy" } dd { code { (hid) } }
                    dt { "Last uploaded" } dd { (when(&v["last_uploaded"])) }
                }
                (record_props(d, &["defender", "analytics"]))
            }
            section aria-labelledby="cm-h" {
                h2 id="cm-h" { "Co-management" }
                dl.props {
                    dt { "State" } dd id="comanagement-state" { (state_label(v["comanagement"]["record"]["state"].as_str().unwrap_or("none"))) }
                    dt { "Eligibility" } dd id="eligibility-class" { (class_label(&eligibility.0)) }
                    dt { "Why" } dd id="eligibility-reason" { (eligibility.1) }
                }
                h2 { "Endpoint analytics" }
                @if analytics.is_null() { p { "No Endpoint analytics data for this device." } }
                @else {
                    dl.props {
                        @if ea["status"] == json!("reporting") {
                            dt { "Startup score" } dd id="ea-startup" { (s(&ea["startup_score"])) }
                            dt { "Boot score" } dd { (s(&ea["boot_score"])) }
                            dt { "Sign-in score" } dd { (s(&ea["sign_in_score"])) }
                            dt { "App reliability score" } dd { (s(&ea["app_reliability_score"])) }
                        } @else {
                            dt { "Scores" } dd id="ea-startup" { "Insufficient data: not reporting yet" }
                        }
                        dt { "Updated" } dd { (s(&v["analytics"]["updated"])) }
                    }
                    (record_props(&analytics["analytics"], &["apps"]))
                    @if let Some(apps) = analytics["analytics"]["apps"].as_array() {
                        table { caption { "Apps (14 days)" } thead { tr { th scope="col" { "App" } th scope="col" { "Usage (min)" } th scope="col" { "Crashes (14 days)" } } }
                            tbody { @for a in apps { tr { td { (s(&a["name"])) } td { (s(&a["usage_minutes"])) } td { (a["daily_crashes"].as_array().map(|d| d.iter().filter_map(Value::as_u64).sum::<u64>()).unwrap_or(0)) } } } } }
                    }
                }
                h2 { "Defender" }
                @if v["defender"].is_null() { p { "No Defender data for this device." } }
                @else {
                    (record_props(&v["defender"]["record"]["defender"], &["detections"]))
                    @let dets = v["defender"]["record"]["defender"]["detections"].as_array().cloned().unwrap_or_default();
                    h3 { "Detections (" (dets.len()) ")" }
                    @if !dets.is_empty() {
                        table { thead { tr { th scope="col" { "Threat" } th scope="col" { "Severity" } th scope="col" { "Status" } th scope="col" { "First detected" } } }
                            tbody { @for x in &dets { tr { td { (s(&x["threat_name"])) } td { (s(&x["severity"])) } td { (s(&x["current_status"])) } td { (s(&x["initial_detection_time"])) } } } } }
                    }
                }
            }
        }
        section aria-labelledby="actions-h" id="actions" {
            h2 id="actions-h" { "Actions" }
            @if device_actions.is_empty() {
                p { "The hierarchy's features declare no device action." }
            }
            @for a in &device_actions {
                @let id = s(&a["id"]);
                form.action method="post" action=(format!("/admin/hierarchies/{hid}/devices/{rid}/actions")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="hidden" name="action" value=(id);
                    fieldset {
                        legend { (s(&a["name"])) }
                        @for p in a["parameters"].as_array().cloned().unwrap_or_default() {
                            @let pname = s(&p["name"]);
                            @let fid = format!("p-{id}-{pname}");
                            div.field {
                                label for=(fid) { (pname) @if p["required"].as_bool() == Some(true) { " (required)" } }
                                @match p["type"].as_str() {
                                    Some("integer") => input type="number" id=(fid) name=(format!("param.{pname}")) required[p["required"].as_bool() == Some(true)];,
                                    Some("boolean") => input type="checkbox" id=(fid) name=(format!("param.{pname}")) value="true";,
                                    _ => input type="text" id=(fid) name=(format!("param.{pname}")) required[p["required"].as_bool() == Some(true)];,
                                }
                                @if let Some(d) = p["description"].as_str() { small { (d) } }
                            }
                        }
                        button type="submit" id=(format!("run-{id}")) { "Run " (s(&a["name"])) }
                    }
                }
            }
            h3 { "Recent actions on this device" }
            @if recent.is_empty() { p id="no-actions" { "None yet." } }
            ul.actions-list id="recent-actions" {
                @for a in &recent { li { (action_result(a)) } }
            }
        }
        (why_panel(&c, &h, &device_actions))
    };
    shell(&c, "devices", &name, body)
}

/// Eligibility class and reason of a device record.
fn eligibility_of(d: &Value) -> (String, String) {
    match serde_json::from_value::<cloudattach_model::Device>(d.clone()) {
        Ok(dev) => {
            let (class, why) = cloudattach_model::comanagement::explain_class(&dev);
            (class.as_str().to_string(), why)
        }
        Err(_) => ("—".into(), "the device record could not be read".into()),
    }
}

fn ea_device_scores(analytics_record: &Value) -> Value {
    serde_json::from_value::<crate::ingest::AnalyticsRecord>(analytics_record.clone())
        .map(|r| crate::read::device_scores(&r))
        .unwrap_or(Value::Null)
}

/// One action with its status and, when it has one, its result.
fn action_result(a: &Value) -> Markup {
    let status = a["status"].as_str().unwrap_or("");
    let done = !matches!(status, "pending" | "running");
    let id = s(&a["id"]);
    html! {
        div.action-result id=(format!("action-{id}")) data-action=(id) data-final=(if done { "true" } else { "false" }) aria-live="polite" {
            p {
                strong { (s(&a["action"])) }
                " · " span.status.(status) { (status) }
                " · asked " (when(&a["created"])) " by " (s(&a["requested_by"]))
            }
            @if let Some(e) = a["error"].as_object() {
                p.err { (e.get("message").map(s).unwrap_or_default()) }
                @if let Some(l) = e.get("link").and_then(Value::as_str) { p { small { "See " (l) } } }
            }
            @if !a["result"].is_null() { (result_view(&a["result"])) }
        }
    }
}

/// A result as a person reads it: rows with columns as a table, objects as properties, lists
/// of records as tables; deeper than that, its JSON.
fn result_view(r: &Value) -> Markup {
    html! { div.result { (value_view(r, 0)) } }
}

fn value_view(v: &Value, depth: usize) -> Markup {
    if depth > 3 {
        return html! { code.json { (v.to_string()) } };
    }
    match v {
        Value::Object(m) => {
            if let (Some(Value::Array(cols)), Some(Value::Array(rows))) =
                (m.get("columns"), m.get("rows"))
            {
                return html! {
                    div.table-wrap { table.result {
                        thead { tr { @for c in cols { th scope="col" { (c["name"].as_str().map(str::to_string).unwrap_or_else(|| s(c))) } } } }
                        tbody { @for row in rows { tr {
                            @if let Some(cells) = row.as_array() { @for x in cells { td { (s(x)) } } }
                            @else if let Some(o) = row.as_object() {
                                @for c in cols { td { (o.get(c["name"].as_str().unwrap_or_else(|| c.as_str().unwrap_or(""))).map(s).unwrap_or_default()) } }
                            }
                            @else { td { (s(row)) } }
                        } } }
                    } }
                    @for (k, x) in m { @if k != "columns" && k != "rows" { p { strong { (k) ": " } (s(x)) } } }
                };
            }
            html! {
                dl.props {
                    @for (k, x) in m {
                        dt { (k) }
                        dd { (value_view(x, depth + 1)) }
                    }
                }
            }
        }
        Value::Array(items) if items.is_empty() => html! { "none" },
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut keys: Vec<&String> = Vec::new();
            for i in items {
                for k in i.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            html! {
                div.table-wrap { table.result {
                    thead { tr { @for k in &keys { th scope="col" { (k) } } } }
                    tbody { @for i in items { tr { @for k in &keys {
                        td { @let x = &i[k.as_str()]; @if x.is_object() || x.is_array() { code.json { (x.to_string()) } } @else { (s(x)) } }
                    } } } }
                } }
            }
        }
        Value::Array(items) => html! { (items.iter().map(s).collect::<Vec<_>>().join(", ")) },
        other => html! { (s(other)) },
    }
}

/// "Why can't I …?": the authorization chain of each action for the signed-in person, as far
/// as the cloud can see it; the site's half names what the site checks.
fn why_panel(c: &Console, h: &Value, actions: &[&Value]) -> Markup {
    let held = c.caller.intune_permissions();
    let authority = h["effective_authority"]
        .as_str()
        .unwrap_or("configmgr+intune");
    let healthy = h["connector"]["healthy"].as_bool() == Some(true);
    html! {
        details.why id="why-panel" {
            summary { "Why can't I …?" }
            p { "The chain each action passes for you, " (c.upn) ", in order. The first step that fails stops it." }
            @for a in actions {
                @let mut need: Vec<String> = vec![cloudattach_model::actions::INTUNE_INITIATE.to_string()];
                @let _ = a["intune_permissions"].as_array().map(|p| need.extend(p.iter().filter_map(|x| x.as_str().map(str::to_string))));
                @let missing: Vec<&String> = need.iter().filter(|p| !held.contains(&p.as_str())).collect();
                h3 { (s(&a["name"])) }
                ol.chain {
                    li.(if missing.is_empty() { "ok" } else { "bad" }) {
                        strong { "Intune role: " }
                        @if missing.is_empty() { "your Intune roles grant " (need.join(", ")) "." }
                        @else { "missing " (missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) ". Ask an Intune Administrator for a role that grants it (Tenant administration)." }
                    }
                    li.ok {
                        strong { "Authority: " }
                        @if authority == "intune" { "Intune alone decides (Use Intune RBAC is on and the site does not enforce Configuration Manager RBAC)." }
                        @else { "Configuration Manager RBAC is enforced too: the site also checks that you are a discovered user with a security role granting " (a["site_permissions"].as_array().map(|p| p.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default()) " on a collection holding the device. A cloud-only account fails there." }
                    }
                    li.(if healthy { "ok" } else { "bad" }) {
                        strong { "Connector: " }
                        @if healthy { "healthy — the site will pick the action up." }
                        @else { "unhealthy (" (h["connector"]["reason"].as_str().unwrap_or("never seen")) ") — the action waits, then times out." }
                    }
                }
            }
        }
    }
}

/// `POST /admin/hierarchies/{hid}/devices/{rid}/actions`
pub(crate) async fn ask_action(
    c: Console,
    Path((hid, rid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form_of(&body);
    if let Err(r) = c.check_post(&headers, &f) {
        return *r;
    }
    let action = f.get("action").cloned().unwrap_or_default();
    let declared = c
        .get(
            &format!("/api/v1/hierarchies/{}/actions/declared", enc(&hid)),
            &[],
        )
        .await
        .ok()
        .and_then(|x| x["value"].as_array().cloned())
        .unwrap_or_default();
    let decl = declared.iter().find(|a| a["id"] == json!(action));
    let mut params = serde_json::Map::new();
    for (k, v) in &f {
        let Some(name) = k.strip_prefix("param.") else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        let kind = decl
            .and_then(|d| d["parameters"].as_array())
            .and_then(|ps| ps.iter().find(|p| p["name"] == json!(name)))
            .and_then(|p| p["type"].as_str())
            .unwrap_or("string");
        let value = match kind {
            "integer" => match v.trim().parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    return api_error(
                        &c,
                        "devices",
                        ApiError::bad_request(format!("{name} must be a whole number, not {v:?}")),
                    );
                }
            },
            "boolean" => json!(v == "true"),
            _ => json!(v),
        };
        params.insert(name.to_string(), value);
    }
    let path = format!(
        "/api/v1/hierarchies/{}/devices/{}/actions",
        enc(&hid),
        enc(&rid)
    );
    match c
        .api(
            Method::POST,
            &path,
            Some(json!({"action": action, "parameters": params})),
        )
        .await
    {
        Ok(v) => redirect(&format!(
            "/admin/hierarchies/{}/devices/{}#action-{}",
            enc(&hid),
            enc(&rid),
            enc(v["id"].as_str().unwrap_or(""))
        )),
        Err(e) => api_error(&c, "devices", e),
    }
}

/// `GET /admin/actions/{id}`: one action's result as an HTML fragment (the device page
/// refreshes its running actions with it).
pub(crate) async fn action_fragment(c: Console, Path(id): Path<String>) -> Response {
    match c.get(&format!("/api/v1/actions/{}", enc(&id)), &[]).await {
        Ok(a) => html_page(StatusCode::OK, action_result(&a).into_string()),
        Err(e) => {
            let mut r = html_page(e.status, html! { p.err { (e.message) } }.into_string());
            *r.status_mut() = e.status;
            r
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reports

fn hierarchy_filter(action: &str, current: &str, hs: &[(String, String)], extra: Markup) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            (select("hierarchy", "Hierarchy", current, hs))
            (extra)
            div.field.actions { button type="submit" { "Apply" } }
        }
    }
}

fn score_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => "Insufficient data".into(),
    }
}

/// `GET /admin/endpoint-analytics`
pub(crate) async fn endpoint_analytics(c: Console, Query(q): Q) -> Response {
    let hierarchy = q.get("hierarchy").cloned().unwrap_or_default();
    let page = page_of(&q, "page");
    let mut hq: Vec<(&str, String)> = Vec::new();
    if !hierarchy.is_empty() {
        hq.push(("hierarchy", hierarchy.clone()));
    }
    let r = match c.get("/api/v1/reports/endpoint-analytics", &hq).await {
        Ok(v) => v,
        Err(e) => return api_error(&c, "ea", e),
    };
    let mut aq = hq.clone();
    aq.push(("$top", PAGE_SIZE.to_string()));
    aq.push(("$skiptoken", ((page - 1) * PAGE_SIZE).to_string()));
    let apps = match c.get("/api/v1/reports/endpoint-analytics/apps", &aq).await {
        Ok(v) => v,
        Err(e) => return api_error(&c, "ea", e),
    };
    let device_q = q.get("device").cloned().unwrap_or_default();
    let dpage = page_of(&q, "dpage");
    let mut dq = hq.clone();
    dq.push(("$top", PAGE_SIZE.to_string()));
    dq.push(("$skiptoken", ((dpage - 1) * PAGE_SIZE).to_string()));
    if !device_q.is_empty() {
        dq.push(("name", device_q.clone()));
    }
    let devs = match c
        .get("/api/v1/reports/endpoint-analytics/devices", &dq)
        .await
    {
        Ok(v) => v,
        Err(e) => return api_error(&c, "ea", e),
    };
    let dev_total = count(&devs["@odata.count"]);
    let dev_pages = dev_total.div_ceil(PAGE_SIZE).max(1);
    let dlink = |p: u64| {
        let mut v = vec![("dpage", p.to_string())];
        if !hierarchy.is_empty() {
            v.push(("hierarchy", hierarchy.clone()));
        }
        if !device_q.is_empty() {
            v.push(("device", device_q.clone()));
        }
        format!(
            "/admin/endpoint-analytics?{}#per-device-h",
            serde_urlencoded::to_string(&v).unwrap_or_default()
        )
    };
    let hs = hierarchy_options(&c).await;
    let sp = &r["startup_performance"];
    let ar = &r["app_reliability"];
    let min = count(&r["minimum_devices"]);
    let app_total = count(&apps["@odata.count"]);
    let app_pages = app_total.div_ceil(PAGE_SIZE).max(1);
    let link = |p: u64| {
        let mut v = vec![("page", p.to_string())];
        if !hierarchy.is_empty() {
            v.push(("hierarchy", hierarchy.clone()));
        }
        format!(
            "/admin/endpoint-analytics?{}",
            serde_urlencoded::to_string(&v).unwrap_or_default()
        )
    };
    let body = html! {
        (hierarchy_filter("/admin/endpoint-analytics", &hierarchy, &hs, html! {}))
        p { "Enrolled devices: " strong id="ea-enrolled" { (count(&r["enrolled_devices"])) } " · reporting: " strong id="ea-reporting" { (count(&r["reporting_devices"])) }
            " · scores need at least " (min) " reporting devices." }
        div.gauges {
            figure id="ea-overall" { (svg(charts::gauge("Endpoint analytics score", r["endpoint_analytics_score"].as_f64()))) figcaption { "Endpoint analytics score: " (score_text(&r["endpoint_analytics_score"])) } }
            figure id="ea-startup-score" { (svg(charts::gauge("Startup performance", sp["score"].as_f64()))) figcaption { "Startup performance: " (score_text(&sp["score"])) } }
            figure id="ea-reliability-score" { (svg(charts::gauge("App reliability", ar["score"].as_f64()))) figcaption { "App reliability: " (score_text(&ar["score"])) } }
        }
        section aria-labelledby="sp-h" {
            h2 id="sp-h" { "Startup performance" }
            @if sp["status"] == json!("ok") {
                dl.props { dt { "Boot score" } dd { (score_text(&sp["boot_score"])) } dt { "Sign-in score" } dd { (score_text(&sp["sign_in_score"])) } dt { "Devices" } dd { (count(&sp["devices"])) } }
            } @else {
                p.notice { "Insufficient data: " (count(&sp["devices"])) " of the " (min) " reporting devices the score needs." }
            }
        }
        section aria-labelledby="ar-h" {
            h2 id="ar-h" { "App reliability" }
            @if ar["status"] != json!("ok") {
                p.notice { "Insufficient data: " (count(&ar["devices"])) " of the " (min) " devices with app data the score needs." }
            }
            p { span id="app-count" { (app_total) } " apps" }
            div.table-wrap { table id="apps" {
                thead { tr { th scope="col" { "App" } th scope="col" { "Devices" } th scope="col" { "Usage (min)" } th scope="col" { "Crashes" } th scope="col" { "MTTF (min)" } th scope="col" { "Score" } } }
                tbody { @for a in apps["value"].as_array().cloned().unwrap_or_default() {
                    tr { td { (s(&a["name"])) } td { (s(&a["devices"])) } td { (s(&a["usage_minutes"])) } td { (s(&a["crashes"])) } td { (s(&a["mttf_minutes"])) } td { (s(&a["score"])) } }
                } }
            } }
            @if app_pages > 1 {
                nav.pager aria-label="App pages" {
                    @if page > 1 { a href=(link(page - 1)) rel="prev" { "‹ Previous" } }
                    span { "Page " (page) " of " (app_pages) }
                    @if page < app_pages { a href=(link(page + 1)) rel="next" { "Next ›" } }
                }
            }
        }
        section aria-labelledby="per-device-h" {
            h2 id="per-device-h" { "Per device" }
            form.filters method="get" action="/admin/endpoint-analytics" {
                @if !hierarchy.is_empty() { input type="hidden" name="hierarchy" value=(hierarchy); }
                div.field { label for="device-q" { "Device name starts with" } input type="search" id="device-q" name="device" value=(device_q); }
                div.field.actions { button type="submit" id="device-search" { "Search" } }
            }
            p { span id="ea-device-total" { (dev_total) } " devices with Endpoint analytics data" }
            div.table-wrap { table id="ea-devices" {
                thead { tr { th scope="col" { "Device" } th scope="col" { "Status" } th scope="col" { "Startup" } th scope="col" { "Boot" } th scope="col" { "Sign-in" } th scope="col" { "App reliability" } } }
                tbody { @for d in devs["value"].as_array().cloned().unwrap_or_default() {
                    tr {
                        td { a href=(format!("/admin/hierarchies/{}/devices/{}", s(&d["hierarchy_id"]), s(&d["resource_id"]))) { (s(&d["device_name"])) } }
                        td { (s(&d["status"])) }
                        td { (s(&d["startup_score"])) } td { (s(&d["boot_score"])) } td { (s(&d["sign_in_score"])) } td { (s(&d["app_reliability_score"])) }
                    }
                } }
            } }
            @if dev_pages > 1 {
                nav.pager aria-label="Device pages" {
                    @if dpage > 1 { a href=(dlink(dpage - 1)) rel="prev" id="ea-prev" { "‹ Previous" } }
                    span { "Page " (dpage) " of " (dev_pages) }
                    @if dpage < dev_pages { a href=(dlink(dpage + 1)) rel="next" id="ea-next" { "Next ›" } }
                }
            }
        }
    };
    shell(&c, "ea", "Endpoint analytics", body)
}

const REPORTS: [(&str, &str); 4] = [
    ("unhealthy-endpoints", "Unhealthy endpoints"),
    ("active-malware", "Active malware"),
    ("antivirus-agent-status", "Antivirus agent status"),
    ("detected-malware", "Detected malware"),
];

/// `GET /admin/antivirus[?report=&hierarchy=&page=]`
pub(crate) async fn antivirus(c: Console, Query(q): Q) -> Response {
    let report = q
        .get("report")
        .filter(|r| REPORTS.iter().any(|(id, _)| id == r))
        .cloned()
        .unwrap_or_else(|| REPORTS[0].0.to_string());
    let hierarchy = q.get("hierarchy").cloned().unwrap_or_default();
    let device_q = q.get("device").cloned().unwrap_or_default();
    let page = page_of(&q, "page");
    let mut params: Vec<(&str, String)> = vec![
        ("$top", PAGE_SIZE.to_string()),
        ("$skiptoken", ((page - 1) * PAGE_SIZE).to_string()),
    ];
    if !hierarchy.is_empty() {
        params.push(("hierarchy", hierarchy.clone()));
    }
    if !device_q.is_empty() && report != "detected-malware" {
        params.push(("name", device_q.clone()));
    }
    let v = match c
        .get(&format!("/api/v1/reports/defender/{report}"), &params)
        .await
    {
        Ok(v) => v,
        Err(e) => return api_error(&c, "antivirus", e),
    };
    // The summary chart: the agent status report's summary, whichever report is open.
    let mut sq: Vec<(&str, String)> = vec![("$top", "1".into())];
    if !hierarchy.is_empty() {
        sq.push(("hierarchy", hierarchy.clone()));
    }
    let status = match c
        .get("/api/v1/reports/defender/antivirus-agent-status", &sq)
        .await
    {
        Ok(v) => v,
        Err(e) => return api_error(&c, "antivirus", e),
    };
    let sm = &status["summary"];
    let summary: Vec<(&str, u64)> = vec![
        ("Protected", count(&sm["protected"])),
        ("Unprotected", count(&sm["unprotected"])),
        (
            "Signatures out of date",
            count(&sm["signature_out_of_date"]),
        ),
        (
            "Onboarded to Defender for Endpoint",
            count(&sm["mde_onboarded"]),
        ),
    ];
    let total = count(&v["@odata.count"]);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let rows = v["value"].as_array().cloned().unwrap_or_default();
    let link = |r: &str, p: u64| {
        let mut x = vec![("report", r.to_string())];
        if !hierarchy.is_empty() {
            x.push(("hierarchy", hierarchy.clone()));
        }
        if !device_q.is_empty() {
            x.push(("device", device_q.clone()));
        }
        if p > 1 {
            x.push(("page", p.to_string()));
        }
        format!(
            "/admin/antivirus?{}",
            serde_urlencoded::to_string(&x).unwrap_or_default()
        )
    };
    let cols: Vec<(&str, &str)> = match report.as_str() {
        "unhealthy-endpoints" => vec![
            ("device_name", "Device"),
            ("issues", "Issues"),
            ("computer_state", "Computer state"),
            ("product_status", "Product status"),
        ],
        "active-malware" => vec![
            ("device_name", "Device"),
            ("threat_name", "Threat"),
            ("category", "Category"),
            ("severity", "Severity"),
            ("initial_detection_time", "First detected"),
            ("number_of_detections", "Detections"),
        ],
        "antivirus-agent-status" => vec![
            ("device_name", "Device"),
            ("defender_enabled", "Defender on"),
            ("rtp_enabled", "Real-time protection"),
            ("signature_out_of_date", "Signatures out of date"),
            ("tamper_protection_enabled", "Tamper protection"),
            ("mde_onboarding_state", "Defender for Endpoint"),
        ],
        _ => vec![
            ("threat_name", "Threat"),
            ("category", "Category"),
            ("severity", "Severity"),
            ("device_count", "Devices"),
            ("detection_count", "Detections"),
            ("active", "Active"),
        ],
    };
    let hs = hierarchy_options(&c).await;
    let title = REPORTS
        .iter()
        .find(|(id, _)| *id == report)
        .map(|x| x.1)
        .unwrap_or("");
    let body = html! {
        figure.chart id="antivirus-summary" { (svg(charts::bars("Antivirus agent status", &summary))) }
        nav.tabs aria-label="Reports" {
            @for (id, label) in REPORTS {
                a href=(link(id, 1)) aria-current=[(id == report).then_some("page")] { (label) }
            }
        }
        (hierarchy_filter("/admin/antivirus", &hierarchy, &hs, html! {
            input type="hidden" name="report" value=(report);
            @if report != "detected-malware" {
                div.field { label for="device-q" { "Device name starts with" } input type="search" id="device-q" name="device" value=(device_q); }
            }
        }))
        h2 { (title) }
        p { span id="report-total" { (total) } " rows · page " (page) " of " (pages) }
        div.table-wrap { table id="report" {
            thead { tr { @for (_, l) in &cols { th scope="col" { (l) } } } }
            tbody { @for r in &rows { tr {
                @for (k, _) in &cols {
                    @if *k == "device_name" {
                        td { a href=(format!("/admin/hierarchies/{}/devices/{}", s(&r["hierarchy_id"]), s(&r["resource_id"]))) { (s(&r[*k])) } }
                    } @else if *k == "issues" {
                        td { (r[*k].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                    } @else { td { (s(&r[*k])) } }
                }
            } } }
        } }
        nav.pager aria-label="Pages" {
            @if page > 1 { a href=(link(&report, page - 1)) rel="prev" id="prev-page" { "‹ Previous" } }
            @if page < pages { a href=(link(&report, page + 1)) rel="next" id="next-page" { "Next ›" } }
        }
    };
    shell(&c, "antivirus", "Antivirus reports", body)
}

/// `GET /admin/comanagement`
pub(crate) async fn comanagement(c: Console, Query(q): Q) -> Response {
    let hierarchy = q.get("hierarchy").cloned().unwrap_or_default();
    let mut hq: Vec<(&str, String)> = vec![("$top", "1".into())];
    if !hierarchy.is_empty() {
        hq.push(("hierarchy", hierarchy.clone()));
    }
    let cm = match c.get("/api/v1/comanagement/devices", &hq).await {
        Ok(v) => v,
        Err(e) => return api_error(&c, "comanagement", e),
    };
    let sm = &cm["summary"];
    let (eligible, scheduled, enrolled) = (
        count(&sm["eligible"]),
        count(&sm["scheduledForEnrollment"]),
        count(&sm["comanaged"]),
    );
    let all = eligible + scheduled + enrolled;
    // Cumulative stages: a scheduled device was eligible, an enrolled one was scheduled.
    let stages = [
        ("Eligible", all),
        ("Scheduled", scheduled + enrolled),
        ("Enrollment initiated", enrolled),
        ("Enrolled", enrolled),
    ];
    let mut classes = Vec::new();
    for (class, label) in [
        ("comanaged", "Co-managed"),
        ("eligible", "Eligible"),
        ("eligibleButNotAzureAdJoined", "Eligible, not Entra joined"),
        ("needsOsUpdate", "Needs OS update"),
        ("ineligible", "Not eligible"),
    ] {
        let mut p = hq.clone();
        p.push(("eligibility", class.into()));
        let n = match c.get("/api/v1/devices", &p).await {
            Ok(v) => count(&v["@odata.count"]),
            Err(e) => return api_error(&c, "comanagement", e),
        };
        classes.push((class, label, n));
    }
    let hs = hierarchy_options(&c).await;
    let dev_link = |k: &str, v: &str| {
        let mut x = vec![(k, v.to_string())];
        if !hierarchy.is_empty() {
            x.push(("hierarchy", hierarchy.clone()));
        }
        format!(
            "/admin/devices?{}",
            serde_urlencoded::to_string(&x).unwrap_or_default()
        )
    };
    let class_bars: Vec<(&str, u64)> = classes.iter().map(|(_, l, n)| (*l, *n)).collect();
    let body = html! {
        (hierarchy_filter("/admin/comanagement", &hierarchy, &hs, html! {}))
        section aria-labelledby="funnel-h" {
            h2 id="funnel-h" { "Enrollment funnel" }
            figure.chart id="funnel" { (svg(charts::funnel(&stages))) }
            table id="funnel-table" {
                thead { tr { th scope="col" { "Stage" } th scope="col" { "Devices" } th scope="col" { "Of eligible" } th scope="col" { "Devices behind it" } } }
                tbody {
                    tr { td { "Eligible" } td.n { (all) } td { (pct(all, all)) } td { a href=(dev_link("comanagement", "eligible")) { "Eligible, not scheduled" } } }
                    tr { td { "Scheduled" } td.n { (scheduled + enrolled) } td { (pct(scheduled + enrolled, all)) } td { a href=(dev_link("comanagement", "scheduledForEnrollment")) { "Scheduled, not enrolled" } } }
                    tr { td { "Enrollment initiated" } td.n { (enrolled) } td { (pct(enrolled, all)) } td { a href=(dev_link("comanagement", "comanaged")) { "Enrolled" } } }
                    tr { td { "Enrolled" } td.n id="funnel-enrolled" { (enrolled) } td { (pct(enrolled, all)) } td { a href=(dev_link("comanagement", "comanaged")) { "Enrolled" } } }
                }
            }
            p.note { "A site reports a device's enrollment when the client confirms it, so every enrollment it reports has completed: here, initiated equals enrolled." }
        }
        section aria-labelledby="elig-h" {
            h2 id="elig-h" { "Eligibility" }
            figure.chart id="eligibility-chart" { (svg(charts::bars("Devices by co-management eligibility", &class_bars))) }
            table id="eligibility" {
                thead { tr { th scope="col" { "Class" } th scope="col" { "Devices" } } }
                tbody { @for (class, label, n) in &classes {
                    tr { td { a href=(dev_link("eligibility", class)) { (label) } } td.n { (n) } }
                } }
            }
        }
    };
    shell(&c, "comanagement", "Co-management", body)
}

// ---------------------------------------------------------------------------------------------
// Tenant administration

/// `GET /admin/tenant`
pub(crate) async fn tenant_admin(c: Console) -> Response {
    let settings = match c.get("/api/v1/tenant/settings", &[]).await {
        Ok(v) => v,
        Err(e) => return api_error(&c, "tenant", e),
    };
    let on = settings["use_intune_rbac"].as_bool() == Some(true);
    let may_change = c.caller.is_intune_role_admin();
    // Whole lists (every page): an app is called orphaned only when every hierarchy was read.
    let (assignments, apps, hierarchies) = match (
        c.get_all("/api/v1/roleAssignments").await,
        c.get_all("/v1.0/applications").await,
        c.get_all("/api/v1/hierarchies").await,
    ) {
        (Ok(a), Ok(b), Ok(h)) => (a, b, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return api_error(&c, "tenant", e),
    };
    let owners: Vec<String> = hierarchies
        .iter()
        .filter_map(|h| h["app_id"].as_str().map(str::to_string))
        .collect();
    let writes = |a: &Value| {
        a["requiredResourceAccess"].as_array().is_some_and(|r| {
            r.iter()
                .any(|x| x.to_string().contains(crate::auth::PERM_WRITE))
        })
    };
    let body = html! {
        section aria-labelledby="rbac-h" {
            h2 id="rbac-h" { "Roles: Use Intune RBAC" }
            p { "With Use Intune RBAC on, a hierarchy whose RBAC authority setting does not enforce Configuration Manager RBAC lets Intune roles alone decide who may run actions on its devices. The effective authority of each hierarchy is on " a href="/admin/" { "Home" } "." }
            form method="post" action="/admin/tenant/intune-rbac" {
                input type="hidden" name="csrf" value=(c.csrf);
                div.toggle {
                    input type="checkbox" id="use-intune-rbac" name="use_intune_rbac" value="true" checked[on] disabled[!may_change];
                    label for="use-intune-rbac" { "Use Intune RBAC for tenant-attached devices" }
                }
                @if may_change { button type="submit" id="save-rbac" { "Save" } }
                @else { p.note id="rbac-why" { "Only a Global Administrator or an Intune Administrator may change this; you are signed in as " (c.upn) "." } }
            }
        }
        section aria-labelledby="roles-h" {
            h2 id="roles-h" { "Intune role assignments" }
            table id="role-assignments" {
                thead { tr { th scope="col" { "User" } th scope="col" { "Intune roles" } } }
                tbody { @for a in &assignments { tr { td { (s(&a["upn"])) } td { (a["roles"].as_array().map(|r| r.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default()) } } } }
            }
            @if may_change {
                form method="post" action="/admin/tenant/roles" {
                    input type="hidden" name="csrf" value=(c.csrf);
                    fieldset {
                        legend { "Assign roles" }
                        div.field { label for="role-user" { "User (UPN)" } input type="email" id="role-user" name="user" required; }
                        @for r in cloudattach_model::actions::INTUNE_ROLES {
                            @let id = format!("role-{}", r.to_lowercase().replace(' ', "-"));
                            div.toggle { input type="checkbox" id=(id) name="role" value=(r); label for=(id) { (r) } }
                        }
                        button type="submit" id="save-roles" { "Replace this user's Intune roles" }
                    }
                }
            }
        }
        section aria-labelledby="apps-h" {
            h2 id="apps-h" { "App registrations" }
            table id="apps" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Application (client) ID" } th scope="col" { "Created" } th scope="col" { "State" } } }
                tbody { @for a in &apps {
                    @let app_id = s(&a["appId"]);
                    @let owns = owners.contains(&app_id);
                    tr {
                        td { (s(&a["displayName"])) }
                        td { code { (app_id) } }
                        td { (s(&a["createdDateTime"])) }
                        td { @if owns { "Owns an attached hierarchy" } @else if writes(a) { strong.orphan { "Orphaned" } " — may write to the gateway but owns no attached hierarchy; delete it if no site uses it" } @else { "—" } }
                    }
                } }
            }
        }
    };
    shell(&c, "tenant", "Tenant administration", body)
}

/// `POST /admin/tenant/intune-rbac`
pub(crate) async fn set_intune_rbac(c: Console, headers: HeaderMap, body: Bytes) -> Response {
    let f = form_of(&body);
    if let Err(r) = c.check_post(&headers, &f) {
        return *r;
    }
    let on = f.get("use_intune_rbac").is_some_and(|v| v == "true");
    match c
        .api(
            Method::PUT,
            "/api/v1/tenant/settings",
            Some(json!({"use_intune_rbac": on})),
        )
        .await
    {
        Ok(_) => redirect("/admin/tenant?saved=1"),
        Err(e) => api_error(&c, "tenant", e),
    }
}

/// `POST /admin/tenant/roles`
pub(crate) async fn set_roles(c: Console, headers: HeaderMap, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let f: HashMap<String, String> = pairs.iter().cloned().collect();
    if let Err(r) = c.check_post(&headers, &f) {
        return *r;
    }
    let user = f
        .get("user")
        .map(|u| u.trim().to_string())
        .unwrap_or_default();
    let roles: Vec<&String> = pairs
        .iter()
        .filter(|(k, _)| k == "role")
        .map(|(_, v)| v)
        .collect();
    match c
        .api(
            Method::PUT,
            &format!("/api/v1/users/{}/intuneRoles", enc(&user)),
            Some(json!({ "roles": roles })),
        )
        .await
    {
        Ok(_) => redirect("/admin/tenant?saved=1"),
        Err(e) => api_error(&c, "tenant", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("PC-1"), "PC-1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn times_read_as_people_read_them_and_odd_ones_stay_as_sent() {
        assert_eq!(when(&json!("2026-12-04T20:52:08Z")), "2026-12-04 20:52 UTC");
        // A connector's heartbeat carries any text: never a panic on a character boundary.
        assert_eq!(when(&json!("2026-12-04T20:5éZ")), "2026-12-04T20:5éZ");
        assert_eq!(when(&json!("soon")), "soon");
        assert_eq!(when(&Value::Null), "—");
    }

    #[test]
    fn page_numbers_are_clamped() {
        let q: HashMap<String, String> = [("page".to_string(), u64::MAX.to_string())].into();
        assert_eq!(page_of(&q, "page"), MAX_PAGE);
        let q: HashMap<String, String> = [("page".to_string(), "0".to_string())].into();
        assert_eq!(page_of(&q, "page"), 1);
    }

    #[test]
    fn device_links_keep_filters() {
        let q: HashMap<String, String> = [("q", "PC"), ("defender", "unhealthy"), ("page", "3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let dq = DeviceQuery::of(&q);
        assert_eq!(dq.page, 3);
        assert_eq!(
            dq.link(4, None),
            "/admin/devices?q=PC&defender=unhealthy&page=4"
        );
        assert_eq!(
            dq.link(1, Some("-name")),
            "/admin/devices?q=PC&defender=unhealthy&sort=-name"
        );
    }
}

//! Shared helpers of the end-to-end tests: a cloud tenant service in-process (on a runtime the
//! test owns), a generated site, the `cloudattach` binary run against them, the cloud's read
//! API, and the expected counts computed independently from the site's files (docs/domain.md).
#![allow(dead_code)]

use cloudattach_cloud::auth::{self, SIGNING_KEY_FILE};
use cloudattach_cloud::seed::{CONTOSO_READER_APP_ID, DEV_PASSWORD, DEV_SECRET};
use cloudattach_cloud::{RunningCloud, ServeOptions};
use cloudattach_sdk::SiteVersion;
use cloudattach_sitegen::{GenerateOptions, generate_site};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const TENANT: &str = "contoso.example";
pub const ADMIN: &str = "admin@contoso.example";
pub const PUBLIC_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c11e";

/// One RSA key for the whole test binary (key generation is slow in debug builds).
fn key_pem() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| auth::generate_key_pem().expect("signing key"))
}

/// The options every test starts from: an ephemeral port, 1 s device code polling, the
/// contoso administrator auto-approved.
pub fn cloud_opts() -> ServeOptions {
    ServeOptions {
        addr: "127.0.0.1:0".into(),
        device_code_interval_secs: 1,
        auto_approve: Some(ADMIN.into()),
        ..ServeOptions::default()
    }
}

/// What a finished `cloudattach` run left.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected exit 0; stderr:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A cloud tenant service on a runtime the test owns, and a working directory for the site and
/// `attach.toml`. Shut down on drop.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    cloud: Option<RunningCloud>,
    pub base: String,
    pub data: TempDir,
    pub work: TempDir,
    http: reqwest::Client,
    reader: Mutex<Option<String>>,
}

impl World {
    pub fn start() -> World {
        World::start_with(cloud_opts())
    }

    pub fn start_with(mut opts: ServeOptions) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::write(data.path().join(SIGNING_KEY_FILE), key_pem()).expect("key");
        opts.data = Some(data.path().to_path_buf());
        let cloud = rt
            .block_on(cloudattach_cloud::start(opts))
            .expect("start the cloud");
        let base = cloud.base_url();
        World {
            rt,
            cloud: Some(cloud),
            base,
            data,
            work: tempfile::tempdir().expect("tempdir"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            reader: Mutex::new(None),
        }
    }

    /// Stops the cloud and starts it again on the same address and data with `opts` (e.g.
    /// without the faults of the first run).
    pub fn restart_with(&mut self, mut opts: ServeOptions) {
        if let Some(c) = self.cloud.take() {
            let addr = c.addr;
            self.rt.block_on(c.shutdown());
            opts.addr = addr.to_string();
        }
        opts.data = Some(self.data.path().to_path_buf());
        let mut tries = 0;
        let cloud = loop {
            match self.rt.block_on(cloudattach_cloud::start(opts.clone())) {
                Ok(c) => break c,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("restart the cloud: {e}"),
            }
        };
        assert_eq!(cloud.base_url(), self.base);
        self.cloud = Some(cloud);
    }

    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    pub fn site_dir(&self) -> PathBuf {
        self.work.path().join("site")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.work.path().join(".cloudattach")
    }

    /// Generates a site in `site/` and loads its model.
    pub fn generate(&self, devices: u64, site_version: u32) -> SiteModel {
        let opts = GenerateOptions {
            devices,
            seed: 7,
            site_version: SiteVersion(site_version),
            ..GenerateOptions::default()
        };
        generate_site(&opts, &self.site_dir(), true).expect("generate the site");
        SiteModel::load(&self.site_dir())
    }

    /// Writes `attach.toml`: the site, this cloud, the contoso tenant, then `rest`.
    pub fn config(&self, environment: &str, rest: &str) {
        let text = format!(
            "[site]\npath = \"site\"\n\n[cloud]\nenvironment = \"{environment}\"\nendpoint = \"{}\"\ntenant = \"{TENANT}\"\n\n{rest}\n",
            self.base
        );
        std::fs::write(self.work.path().join("attach.toml"), text).expect("write attach.toml");
    }

    /// The binary with `--config attach.toml`, run in the working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cloudattach"));
        c.arg("--config")
            .arg(self.work.path().join("attach.toml"))
            .args(args)
            .current_dir(self.work.path())
            .env_remove("CLOUDATTACH_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run cloudattach");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `apply --yes --output json`, which must succeed.
    pub fn apply_ok(&self) -> Value {
        let r = self.cli(&["--output", "json", "apply", "--yes"]);
        r.ok();
        r.json()
    }

    /// One HTTP request with retries on throttling, 5xx and dropped connections that honour
    /// `Retry-After` (the test's own requests must not count as early retries).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.rt.block_on(async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut rq = self.http.request(method.clone(), &url).bearer_auth(token);
                if let Some(b) = body {
                    rq = rq.json(b);
                }
                match rq.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry_after = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        if (status == 429 || status >= 500) && attempt < 30 {
                            let wait = match retry_after {
                                Some(s) => Duration::from_millis(s * 1000 + 100),
                                None => Duration::from_millis(200),
                            };
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        return (status, v);
                    }
                    Err(e) if attempt < 30 => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{method} {path}: {e}"),
                }
            }
        })
    }

    /// A token of the seeded read-only app (client credentials).
    pub fn reader_token(&self) -> String {
        let mut g = self.reader.lock().unwrap();
        if let Some(t) = g.as_ref() {
            return t.clone();
        }
        let v = self.token_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CONTOSO_READER_APP_ID),
            ("client_secret", DEV_SECRET),
            ("scope", "api://cloudattach/.default"),
        ]);
        let t = v["access_token"]
            .as_str()
            .expect("reader token")
            .to_string();
        *g = Some(t.clone());
        t
    }

    /// POSTs a form to the tenant's token endpoint; the JSON answer, success or error.
    pub fn token_form(&self, form: &[(&str, &str)]) -> Value {
        self.form(&format!("/{TENANT}/oauth2/v2.0/token"), form).1
    }

    pub fn form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let r = self
                .http
                .post(url)
                .form(form)
                .send()
                .await
                .expect("post form");
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        })
    }

    /// The administrator's delegated token, by the device code flow (auto-approved).
    pub fn admin_token(&self) -> String {
        let (s, dc) = self.form(
            &format!("/{TENANT}/oauth2/v2.0/devicecode"),
            &[
                ("client_id", PUBLIC_CLIENT_ID),
                ("scope", "api://cloudattach/.default offline_access"),
            ],
        );
        assert_eq!(s, 200, "devicecode: {dc}");
        let code = dc["device_code"].as_str().expect("device_code").to_string();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(1100));
            let v = self.token_form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", PUBLIC_CLIENT_ID),
                ("device_code", &code),
            ]);
            if let Some(t) = v["access_token"].as_str() {
                return t.to_string();
            }
            assert_eq!(v["error"], "authorization_pending", "device code grant");
        }
        panic!("the administrator's device code was never approved");
    }

    pub fn get(&self, path: &str) -> Value {
        let t = self.reader_token();
        let (s, v) = self.request(reqwest::Method::GET, path, &t, None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Every row of a paged list (all its pages, following `@odata.nextLink`).
    pub fn get_all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next {
            let v = self.get(&p);
            out.extend(v["value"].as_array().expect("value").iter().cloned());
            next = v["@odata.nextLink"].as_str().map(String::from);
        }
        out
    }

    /// The cloud's status of a hierarchy, as counts.
    pub fn counts(&self, hid: &str) -> Counts {
        let v = self.get(&format!("/api/v1/hierarchies/{hid}/status"));
        Counts::from_status(&v)
    }

    /// The cloud's `/api/v1/overview` hierarchies.
    pub fn hierarchies(&self) -> Vec<Value> {
        self.get("/api/v1/overview")["hierarchies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `@odata.count` of the tenant's devices.
    pub fn device_count(&self) -> u64 {
        self.get("/api/v1/devices?$top=1")["@odata.count"]
            .as_u64()
            .expect("@odata.count")
    }

    /// Every device the cloud holds for the hierarchy, by resource id (all pages).
    pub fn cloud_devices(&self, hid: &str) -> BTreeMap<i64, Value> {
        let mut out = BTreeMap::new();
        let mut next = Some(format!("/api/v1/devices?$top=1000&hierarchy={hid}"));
        while let Some(path) = next {
            let v = self.get(&path);
            for d in v["value"].as_array().expect("value") {
                let id = d["resource_id"].as_i64().expect("resource_id");
                assert!(out.insert(id, d.clone()).is_none(), "device {id} twice");
            }
            next = v["@odata.nextLink"].as_str().map(String::from);
        }
        out
    }

    /// `/_emulator/stats`.
    pub fn stats(&self) -> Value {
        let url = format!("{}/_emulator/stats", self.base);
        self.rt.block_on(async {
            self.http
                .get(url)
                .send()
                .await
                .expect("stats")
                .json()
                .await
                .expect("stats json")
        })
    }

    /// Registers an app the way an administrator would in the portal (Graph-style), with the
    /// given identifier URI and permissions; optionally grants consent. Returns (client id,
    /// object id, secret).
    pub fn register_app(
        &self,
        admin: &str,
        name: &str,
        uri: &str,
        permissions: Value,
        consent: bool,
    ) -> (String, String, String) {
        let (s, app) = self.request(
            reqwest::Method::POST,
            "/v1.0/applications",
            admin,
            Some(&json!({
                "displayName": name,
                "identifierUris": [uri],
                "requiredResourceAccess": permissions,
            })),
        );
        assert!(s == 201 || s == 200, "create app: {s} {app}");
        let object_id = app["id"].as_str().expect("id").to_string();
        let client_id = app["appId"].as_str().expect("appId").to_string();
        let (s, sp) = self.request(
            reqwest::Method::POST,
            "/v1.0/servicePrincipals",
            admin,
            Some(&json!({"appId": client_id})),
        );
        assert!(s == 201 || s == 200, "create service principal: {s} {sp}");
        let (s, pw) = self.request(
            reqwest::Method::POST,
            &format!("/v1.0/applications/{object_id}/addPassword"),
            admin,
            Some(&json!({"passwordCredential": {"displayName": "test", "endDateTime": "2099-01-01T00:00:00Z"}})),
        );
        assert!(s == 200 || s == 201, "addPassword: {s}");
        let secret = pw["secretText"].as_str().expect("secretText").to_string();
        if consent {
            let (s, v) = self.request(
                reqwest::Method::POST,
                &format!("/v1.0/applications/{object_id}/grantAdminConsent"),
                admin,
                None,
            );
            assert!((200..300).contains(&s), "grantAdminConsent: {s} {v}");
        }
        (client_id, object_id, secret)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(c) = self.cloud.take() {
            self.rt.block_on(c.shutdown());
        }
    }
}

/// The permissions an app needs (docs/domain.md#app-permissions).
pub fn required_permissions() -> Value {
    json!([
        {"resource": "api://cloudattach", "permissions": ["CmCollectionData.read", "CmCollectionData.write"]},
        {"resource": "https://graph.microsoft.com", "permissions": ["Directory.Read.All"]}
    ])
}

/// What the cloud reports for a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub devices: u64,
    pub ea_enrolled: u64,
    pub defender: u64,
    pub scheduled: u64,
    pub comanaged: u64,
    pub authority: String,
    pub enabled: BTreeSet<String>,
}

impl Counts {
    fn from_status(v: &Value) -> Counts {
        let plugins: HashMap<&str, &Value> = v["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| (p["id"].as_str().expect("id"), p))
            .collect();
        let n = |id: &str, k: &str| plugins[id]["counts"][k].as_u64().unwrap_or(0);
        Counts {
            devices: n("tenant-attach", "devices_uploaded"),
            ea_enrolled: n("endpoint-analytics", "devices_enrolled"),
            defender: n("defender-reporting", "devices_reported"),
            scheduled: n("co-management", "devices_scheduled"),
            comanaged: n("co-management", "devices_enrolled"),
            authority: plugins["rbac-authority"]["effective_authority"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            enabled: plugins
                .iter()
                .filter(|(_, p)| p["enabled"] == true)
                .map(|(id, _)| id.to_string())
                .collect(),
        }
    }
}

/// The expected numbers, computed from the site's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub devices: u64,
    pub ea_enrolled: u64,
    pub defender: u64,
    pub scheduled: u64,
    pub comanaged: u64,
}

/// A site read back from its files, independently of the product's code.
pub struct SiteModel {
    pub dir: PathBuf,
    pub hid: String,
    pub devices: Vec<Value>,
    pub collections: HashMap<String, Value>,
}

fn version_parts(s: &str) -> Vec<u64> {
    s.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Compares dotted versions numerically part by part (missing parts are 0).
pub fn version_lt(a: &str, b: &str) -> bool {
    let (a, b) = (version_parts(a), version_parts(b));
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x < y;
        }
    }
    false
}

fn flag(d: &Value, k: &str) -> bool {
    d[k].as_bool().unwrap_or(false)
}

fn is_windows_client(d: &Value) -> bool {
    d["os"].as_str() == Some("Microsoft Windows NT Workstation 10.0")
        && d["os_build"]
            .as_str()
            .is_some_and(|b| b.starts_with("10.0."))
}

/// Co-management eligibility (docs/domain.md#co-management-eligibility), the first rule that matches.
pub fn class(d: &Value) -> &'static str {
    let client = flag(d, "client");
    if client && flag(d, "mdm_enrolled") {
        return "comanaged";
    }
    let cv = d["client_version"].as_str().unwrap_or("");
    let os = d["os"].as_str().unwrap_or("");
    let join = d["join_type"].as_str().unwrap_or("");
    if !client
        || cv.is_empty()
        || version_lt(cv, "5.00.8577")
        || os.contains("Server")
        || !is_windows_client(d)
        || join == "registered"
        || join == "workgroup"
    {
        return "ineligible";
    }
    if version_lt(d["os_build"].as_str().unwrap_or(""), "10.0.16299") {
        return "needsOsUpdate";
    }
    if join == "domain" {
        return "eligibleButNotAzureAdJoined";
    }
    "eligible"
}

/// Endpoint analytics eligibility of an uploaded device.
pub fn ea_eligible(d: &Value) -> bool {
    let cv = d["client_version"].as_str().unwrap_or("");
    flag(d, "client")
        && !d["os"].as_str().unwrap_or("").contains("Server")
        && is_windows_client(d)
        && !cv.is_empty()
        && !version_lt(cv, "5.00.8968")
}

impl SiteModel {
    pub fn load(dir: &Path) -> SiteModel {
        let site = std::fs::read_to_string(dir.join("site.toml")).expect("site.toml");
        let hid = site
            .lines()
            .find_map(|l| {
                l.strip_prefix("hierarchy_id")
                    .map(|r| r.trim().trim_start_matches('=').trim().trim_matches('"'))
            })
            .expect("hierarchy_id")
            .to_string();
        let devices = std::fs::read_to_string(dir.join("devices.jsonl"))
            .expect("devices.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a device line"))
            .collect();
        let cols: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("collections.json")).expect("collections.json"),
        )
        .expect("collections json");
        let collections = cols
            .into_iter()
            .map(|c| (c["id"].as_str().expect("id").to_string(), c))
            .collect();
        SiteModel {
            dir: dir.to_path_buf(),
            hid,
            devices,
            collections,
        }
    }

    /// Writes `devices.jsonl` back.
    pub fn save_devices(&self) {
        let mut text = String::new();
        for d in &self.devices {
            text.push_str(&serde_json::to_string(d).expect("json"));
            text.push('\n');
        }
        std::fs::write(self.dir.join("devices.jsonl"), text).expect("write devices.jsonl");
    }

    pub fn all_ids(&self) -> BTreeSet<i64> {
        self.devices
            .iter()
            .map(|d| d["resource_id"].as_i64().expect("resource_id"))
            .collect()
    }

    pub fn clients(&self) -> BTreeSet<i64> {
        self.devices
            .iter()
            .filter(|d| flag(d, "client"))
            .map(|d| d["resource_id"].as_i64().expect("resource_id"))
            .collect()
    }

    /// A collection's effective membership: members ∪ includes, ∩ limiting.
    pub fn effective(&self, id: &str) -> BTreeSet<i64> {
        self.effective_inner(id, &mut Vec::new())
    }

    fn effective_inner(&self, id: &str, stack: &mut Vec<String>) -> BTreeSet<i64> {
        if id == "SMS00001" {
            return self.all_ids();
        }
        assert!(!stack.iter().any(|s| s == id), "cycle at {id}");
        stack.push(id.to_string());
        let c = &self.collections[id];
        let mut m: BTreeSet<i64> = c["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|x| x.as_i64().expect("member id"))
            .collect();
        for inc in c["includes"].as_array().into_iter().flatten() {
            m.extend(self.effective_inner(inc.as_str().expect("include"), stack));
        }
        if let Some(l) = c["limiting"].as_str() {
            let lim = self.effective_inner(l, stack);
            m.retain(|x| lim.contains(x));
        }
        stack.pop();
        m
    }

    /// The expected cloud counts: `upload` the uploaded scope (None = all clients), `pilot` the
    /// pilot collection's membership (None = enrollment all).
    pub fn expected(
        &self,
        upload: Option<&BTreeSet<i64>>,
        pilot: Option<&BTreeSet<i64>>,
    ) -> Expected {
        let mut e = Expected {
            devices: 0,
            ea_enrolled: 0,
            defender: 0,
            scheduled: 0,
            comanaged: 0,
        };
        for d in &self.devices {
            let id = d["resource_id"].as_i64().expect("resource_id");
            let uploaded = flag(d, "client") && upload.is_none_or(|u| u.contains(&id));
            if uploaded {
                e.devices += 1;
                if ea_eligible(d) {
                    e.ea_enrolled += 1;
                }
                if d["defender"].is_object() {
                    e.defender += 1;
                }
            }
            match class(d) {
                "eligible" if pilot.is_none_or(|p| p.contains(&id)) => e.scheduled += 1,
                "comanaged" => e.comanaged += 1,
                _ => {}
            }
        }
        e
    }
}

/// Asserts the cloud's counts equal the expected ones.
#[track_caller]
pub fn assert_counts(c: &Counts, e: &Expected) {
    assert_eq!(
        (
            c.devices,
            c.ea_enrolled,
            c.defender,
            c.scheduled,
            c.comanaged
        ),
        (
            e.devices,
            e.ea_enrolled,
            e.defender,
            e.scheduled,
            e.comanaged
        ),
        "cloud (devices, EA enrolled, defender, scheduled, comanaged) vs the site's"
    );
}

/// The steps of an apply's JSON by plugin id.
pub fn steps(v: &Value) -> BTreeMap<String, Value> {
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["plugin"].as_str().expect("plugin").to_string(), s.clone()))
        .collect()
}

/// Waits until `f` holds, or panics after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The action the Summary printed for `plugin` (the `#  plugin  action  details` table apply
/// prints on stderr before anything changes, and plan on stdout).
pub fn summary_action(summary: &str, plugin: &str) -> String {
    summary
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|t| t.len() >= 3 && t[0].parse::<u32>().is_ok() && t[1] == plugin)
        .map(|t| t[2].to_string())
        .unwrap_or_else(|| panic!("no Summary line for {plugin} in:\n{summary}"))
}

/// Sets `key = value` lines in the generated site's `site.toml` (e.g. the service connection
/// point offline).
pub fn set_site_keys(site_dir: &Path, lines: &[(&str, &str)]) {
    let path = site_dir.join("site.toml");
    let mut text = std::fs::read_to_string(&path).expect("site.toml");
    for (key, value) in lines {
        let line = format!("{key} = {value}");
        let mut found = false;
        text = text
            .lines()
            .map(|l| {
                if l.split('=').next().is_some_and(|k| k.trim() == *key) {
                    found = true;
                    line.clone()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        assert!(found, "site.toml has no `{key}`");
    }
    std::fs::write(&path, text).expect("write site.toml");
}

/// A delegated token of a seeded user: the device code flow, approved on `/devicelogin` with
/// the development password.
pub fn user_token(w: &World, upn: &str) -> String {
    let (s, dc) = w.form(
        &format!("/{TENANT}/oauth2/v2.0/devicecode"),
        &[
            ("client_id", PUBLIC_CLIENT_ID),
            ("scope", "api://cloudattach/.default offline_access"),
        ],
    );
    assert_eq!(s, 200, "{dc}");
    let (s, page) = w.form(
        "/devicelogin",
        &[
            ("user_code", dc["user_code"].as_str().unwrap()),
            ("upn", upn),
            ("password", DEV_PASSWORD),
            ("action", "approve"),
        ],
    );
    assert!(s == 200 || page.is_null(), "devicelogin {s}: {page}");
    let code = dc["device_code"].as_str().unwrap().to_string();
    for _ in 0..20 {
        let v = w.token_form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("device_code", &code),
        ]);
        if let Some(t) = v["access_token"].as_str() {
            return t.to_string();
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    panic!("{upn} could not sign in");
}

/// Restarts the cloud (same address and data) without auto-approval, so that seeded users other
/// than the administrator can sign in on `/devicelogin`; the cached sign-in of apply is kept.
pub fn people_sign_in_themselves(w: &mut World, timeout: Option<u64>) {
    let mut opts = cloud_opts();
    opts.auto_approve = None;
    opts.action_timeout_secs = timeout;
    w.restart_with(opts);
}

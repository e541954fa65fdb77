//! `init`: the cloud attach wizard's pages — the site, the cloud, sign-in, the app, default or
//! custom settings, the features, co-management — each answered by a flag, a person at a
//! terminal (through [`Front`]) or its default, and turned into `attach.toml` and its Summary.
//!
//! A page is offered only where the site's version and the environment support its feature, and
//! every answer is checked at its page, with the rules `plan` applies: a person is asked again,
//! a flag is an input error. What [`wizard`] returns has passed `plan`'s own checks, so the
//! wizard never writes a configuration `plan` refuses.

use super::{OpError, input};
use crate::app_import::{check_app_id_uri, days_until, read_secret};
use crate::config::{Config, Settings, validate_app_offline};
use crate::registry::Registry;
use crate::selection::{require_wizard_version, unsupported_reason, validate};
use crate::site::Site;
use crate::state::NothingApplied;
use cloudattach_sdk::{Environment, SiteVersion};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::plan::{Plan, PlanOptions, make_plan};

const TENANT_ATTACH: &str = "tenant-attach";
const ENDPOINT_ANALYTICS: &str = "endpoint-analytics";
const RBAC_AUTHORITY: &str = "rbac-authority";
const DEFENDER_REPORTING: &str = "defender-reporting";
const CO_MANAGEMENT: &str = "co-management";

/// The features the wizard has pages for, in the order it writes their tables.
pub const WIZARD_FEATURES: [&str; 5] = [
    TENANT_ATTACH,
    ENDPOINT_ANALYTICS,
    RBAC_AUTHORITY,
    DEFENDER_REPORTING,
    CO_MANAGEMENT,
];

/// The collection the pilot page proposes when the site has it.
pub const DEFAULT_PILOT_COLLECTION: &str = "PS100020";

/// Every page's answer given up front (`None`: ask, or take the default without a terminal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitFlags {
    /// The site directory, relative to the configuration file.
    pub site: Option<String>,
    /// The Azure environment.
    pub environment: Option<Environment>,
    /// The tenant (name or id).
    pub tenant: Option<String>,
    /// `embedded` or a URL.
    pub endpoint: Option<String>,
    /// Sign in at the sign-in page.
    pub sign_in: bool,
    /// `register` or `import`.
    pub app: Option<String>,
    /// The imported app's tenant id.
    pub app_tenant_id: Option<String>,
    /// The imported app's client id.
    pub app_client_id: Option<String>,
    /// The imported app's name.
    pub app_name: Option<String>,
    /// The imported app's App ID URI.
    pub app_id_uri: Option<String>,
    /// The file holding its secret (relative to the configuration file).
    pub app_secret_file: Option<String>,
    /// The environment variable holding its secret.
    pub app_secret_env: Option<String>,
    /// When its secret expires (YYYY-MM-DD).
    pub app_secret_expiry: Option<String>,
    /// `default` or `custom`.
    pub settings: Option<String>,
    /// `all`, a collection id or `none` (custom).
    pub upload: Option<String>,
    /// Endpoint analytics (custom).
    pub endpoint_analytics: Option<bool>,
    /// RBAC authority (custom).
    pub rbac_authority: Option<bool>,
    /// Configuration Manager RBAC enforced (custom; implies RBAC authority).
    pub enforce_configmgr_rbac: Option<bool>,
    /// Defender reporting (custom).
    pub defender_reporting: Option<bool>,
    /// Co-management: `all`, `pilot`, `none` (enrollment) or `off`.
    pub co_management: Option<String>,
    /// The pilot collection (with `pilot`).
    pub pilot_collection: Option<String>,
}

impl InitFlags {
    /// The custom pages' flags that were given, by name.
    fn custom_flags(&self) -> Vec<&'static str> {
        [
            ("--upload", self.upload.is_some()),
            ("--endpoint-analytics", self.endpoint_analytics.is_some()),
            ("--rbac-authority", self.rbac_authority.is_some()),
            (
                "--enforce-configmgr-rbac",
                self.enforce_configmgr_rbac.is_some(),
            ),
            ("--defender-reporting", self.defender_reporting.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    fn app_fields(&self) -> Vec<&'static str> {
        [
            ("--app-tenant-id", self.app_tenant_id.is_some()),
            ("--app-client-id", self.app_client_id.is_some()),
            ("--app-name", self.app_name.is_some()),
            ("--app-id-uri", self.app_id_uri.is_some()),
            ("--app-secret-file", self.app_secret_file.is_some()),
            ("--app-secret-env", self.app_secret_env.is_some()),
            ("--app-secret-expiry", self.app_secret_expiry.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}

/// What the wizard needs from the front end: a person's answers, where the messages go, and the
/// sign-in (which needs the cloud the front end starts).
pub trait Front {
    /// Whether a person answers. Without one, every page takes its flag or its default.
    fn interactive(&self) -> bool;
    /// Asks one question (only when interactive); an empty answer takes the default.
    fn ask(&mut self, question: &str, default: &str) -> Result<String, OpError>;
    /// A line for the person: a page's consequence, a collection list, why an answer was refused.
    fn say(&mut self, line: &str);
    /// A warning.
    fn warn(&mut self, message: &str);
    /// The sign-in page: signs in against `config`'s cloud and checks the account; the UPN.
    fn sign_in(&mut self, config: &Config) -> Result<String, OpError>;
}

/// Where the secret of an imported app is read from (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, relative to the configuration file.
    File(String),
    /// An environment variable.
    Env(String),
}

/// The app page's answers for an imported app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAnswers {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// App name.
    pub name: String,
    /// App ID URI.
    pub app_id_uri: String,
    /// Where the secret is.
    pub secret: SecretSource,
    /// YYYY-MM-DD.
    pub secret_expiry: String,
}

/// Co-management on, with its automatic enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoManagement {
    /// `all`, `pilot` or `none`.
    pub enrollment: String,
    /// With `pilot`.
    pub pilot_collection: Option<String>,
}

/// Custom settings: each feature on or off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomFeatures {
    /// Device upload: `all` or a collection id; `None` = off.
    pub upload: Option<String>,
    /// Endpoint analytics.
    pub endpoint_analytics: bool,
    /// RBAC authority, with whether Configuration Manager RBAC is enforced; `None` = off.
    pub rbac_authority: Option<bool>,
    /// Defender reporting.
    pub defender_reporting: bool,
    /// Co-management; `None` = off.
    pub co_management: Option<CoManagement>,
    /// Why a feature is off because this site or cloud cannot run it (written as a comment).
    pub unavailable: Vec<(String, String)>,
}

/// The answers to the wizard's pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitAnswers {
    /// The site directory, relative to the configuration file.
    pub site_path: String,
    /// The Azure environment.
    pub environment: Environment,
    /// The tenant.
    pub tenant: String,
    /// `embedded` or a URL.
    pub endpoint: String,
    /// An app to import; `None`: apply registers one.
    pub app: Option<AppAnswers>,
    /// `None`: the wizard's default settings; otherwise custom ones.
    pub custom: Option<CustomFeatures>,
}

/// What the wizard made: the configuration and the Summary of what `plan` would do with it.
pub struct Wizarded {
    /// The text of `attach.toml`.
    pub text: String,
    /// The answers it was made from.
    pub answers: InitAnswers,
    /// The configuration, parsed back.
    pub config: Config,
    /// The site.
    pub site: Arc<Site>,
    /// The Summary page: the plan against nothing applied.
    pub plan: Plan,
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The `[cloud]` table alone: what the sign-in page needs before the other pages.
pub fn cloud_table(environment: Environment, endpoint: &str, tenant: &str) -> String {
    format!(
        "[cloud]\nenvironment = \"{environment}\"\nendpoint = {}\ntenant = {}\n",
        toml_str(endpoint),
        toml_str(tenant)
    )
}

/// Writes the answers as `attach.toml`. Under custom settings every wizard feature gets its
/// table, so the file says what is off as plainly as what is on.
pub fn render(a: &InitAnswers) -> String {
    let mut text = format!(
        "# Written by `cloudattach init`. See docs/user-guide.md.\n\n[site]\npath = {}\n\n{}",
        toml_str(&a.site_path),
        cloud_table(a.environment, &a.endpoint, &a.tenant)
    );
    if let Some(app) = &a.app {
        let secret = match &app.secret {
            SecretSource::File(f) => format!("secret_file = {}", toml_str(f)),
            SecretSource::Env(v) => format!("secret_env = {}", toml_str(v)),
        };
        text.push_str(&format!(
            "\n[cloud.app]\ntenant_id = {}\nclient_id = {}\nname = {}\napp_id_uri = {}\n{secret}\nsecret_expiry = {}\n",
            toml_str(&app.tenant_id),
            toml_str(&app.client_id),
            toml_str(&app.name),
            toml_str(&app.app_id_uri),
            toml_str(&app.secret_expiry),
        ));
    }
    let Some(c) = &a.custom else {
        text.push_str("\n[attach]\nsettings = \"default\"\n");
        return text;
    };
    text.push_str("\n[attach]\nsettings = \"custom\"\n");
    for id in WIZARD_FEATURES {
        text.push_str(&format!("\n[features.{id}]\n"));
        if let Some((_, why)) = c.unavailable.iter().find(|(f, _)| f == id) {
            text.push_str(&format!("# {why}\n"));
        }
        let body = match id {
            TENANT_ATTACH => match &c.upload {
                Some(u) => format!("enabled = true\nupload = {}\n", toml_str(u)),
                None => "enabled = false\n".into(),
            },
            ENDPOINT_ANALYTICS => format!("enabled = {}\n", c.endpoint_analytics),
            RBAC_AUTHORITY => match c.rbac_authority {
                Some(enforce) => format!("enabled = true\nenforce_configmgr_rbac = {enforce}\n"),
                None => "enabled = false\n".into(),
            },
            DEFENDER_REPORTING => format!("enabled = {}\n", c.defender_reporting),
            _ => match &c.co_management {
                Some(cm) => {
                    let mut t = format!(
                        "enabled = true\nenrollment = {}\n",
                        toml_str(&cm.enrollment)
                    );
                    if let Some(p) = &cm.pilot_collection {
                        t.push_str(&format!("pilot_collection = {}\n", toml_str(p)));
                    }
                    t
                }
                None => "enabled = false\n".into(),
            },
        };
        text.push_str(&body);
    }
    text
}

/// The directory the configuration's relative paths are resolved against.
pub fn base_of(out: &Path) -> PathBuf {
    out.parent()
        .map(Path::to_path_buf)
        .filter(|b| !b.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One page's answer: the flag (an error when refused), else a person's (asked again when
/// refused), else the default (an error naming the flag when refused).
fn answer<T>(
    front: &mut dyn Front,
    flag: Option<&str>,
    flag_name: &str,
    question: &str,
    default: &str,
    mut parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<T, OpError> {
    if let Some(v) = flag {
        return parse(v).map_err(|m| OpError::Input(format!("init: {flag_name} {v}: {m}")));
    }
    if !front.interactive() {
        return parse(default).map_err(|m| {
            if default.is_empty() {
                OpError::Input(format!("init: {flag_name} is needed: {m}"))
            } else {
                OpError::Input(format!(
                    "init: {flag_name} not given, and its default {default} is refused: {m}"
                ))
            }
        });
    }
    loop {
        let a = front.ask(question, default)?;
        let a = a.trim();
        let a = if a.is_empty() { default } else { a };
        match parse(a) {
            Ok(t) => return Ok(t),
            Err(m) => front.say(&format!("  {m}; please answer again")),
        }
    }
}

fn choice<'a>(choices: &'a [&'a str]) -> impl Fn(&str) -> Result<String, String> + 'a {
    move |a| {
        if choices.contains(&a) {
            Ok(a.to_string())
        } else {
            Err(format!("expected one of {}", choices.join(", ")))
        }
    }
}

fn yes_no(a: &str) -> Result<bool, String> {
    match a.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" => Ok(true),
        "n" | "no" | "false" => Ok(false),
        _ => Err("expected y or n".into()),
    }
}

fn bool_flag(b: Option<bool>) -> Option<&'static str> {
    b.map(|b| if b { "true" } else { "false" })
}

fn show_page(front: &mut dyn Front, title: &str, consequence: &str) {
    if front.interactive() {
        front.say("");
        front.say(&format!("{title} — {consequence}"));
    }
}

fn non_empty(what: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |a| {
        if a.trim().is_empty() || a.contains(char::is_whitespace) {
            Err(format!("{what} is required and has no spaces"))
        } else {
            Ok(a.to_string())
        }
    }
}

/// Opens the site the page names; refuses one that cannot be read or is below the wizard's
/// version, as plan does.
pub fn open_site(base: &Path, path: &str) -> Result<Site, String> {
    let site = Site::open(&base.join(path)).map_err(|e| e.to_string())?;
    require_wizard_version(site.info.version).map_err(|e| e.to_string())?;
    Ok(site)
}

/// A collection of the site: its id, or (`numbered`: a person at the picker) its number in the
/// list [`collection_list`] shows. A flag takes ids only, as the configuration does.
pub fn pick_collection(site: &Site, a: &str, numbered: bool) -> Result<String, String> {
    let ids: Vec<&str> = site.collection_ids().collect();
    if let Some(id) = a
        .parse::<usize>()
        .ok()
        .filter(|_| numbered)
        .and_then(|n| ids.get(n.wrapping_sub(1)))
    {
        return Ok(id.to_string());
    }
    if site.collection(a).is_some() {
        return Ok(a.to_string());
    }
    let known: Vec<&str> = ids.iter().take(12).copied().collect();
    Err(format!(
        "site {} has no collection {a}; it has {}",
        site.info.code,
        known.join(", ")
    ))
}

/// The collections of the site with their sizes, numbered for the picker.
pub fn collection_list(site: &Site) -> Vec<String> {
    site.collection_ids()
        .enumerate()
        .filter_map(|(i, id)| {
            site.collection(id).map(|c| {
                format!(
                    "  {:>3}. {}  {} ({} devices)",
                    i + 1,
                    c.id,
                    c.name,
                    c.member_count
                )
            })
        })
        .collect()
}

/// The pilot page's default: `PS100020` when the site has it, else its first collection other
/// than All Systems.
pub fn default_pilot(site: &Site) -> String {
    if site.collection(DEFAULT_PILOT_COLLECTION).is_some() {
        return DEFAULT_PILOT_COLLECTION.to_string();
    }
    site.collection_ids()
        .find(|id| *id != "SMS00001")
        .unwrap_or("SMS00001")
        .to_string()
}

/// Which of the wizard's features this site and cloud can run, and why not the others.
pub struct Offer<'r> {
    registry: &'r Registry,
    environment: Environment,
    version: SiteVersion,
}

impl<'r> Offer<'r> {
    /// The offer for a site version in an environment.
    pub fn new(registry: &'r Registry, environment: Environment, version: SiteVersion) -> Self {
        Offer {
            registry,
            environment,
            version,
        }
    }

    /// Why `id` cannot run here, or `None` when its page is offered.
    pub fn unavailable(&self, id: &str) -> Option<String> {
        match self.registry.get(id) {
            Some(p) => unsupported_reason(&p.manifest, self.environment, self.version),
            None => Some(format!("no plugin has the id `{id}`")),
        }
    }

    fn name(&self, id: &str) -> String {
        self.registry
            .get(id)
            .map(|p| p.manifest.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// The page's consequence: what enabling the feature does, and the default.
    pub fn consequence(&self, id: &str, default: &str) -> String {
        let description = self
            .registry
            .get(id)
            .map(|p| p.manifest.description.clone())
            .unwrap_or_default();
        format!("{description}. Default: {default}.")
    }

    /// The enrollment choices of the co-management page.
    pub fn enrollment_choices(&self) -> &'static [&'static str] {
        if self.environment == Environment::China {
            &["all", "off"]
        } else {
            &["all", "pilot", "none", "off"]
        }
    }
}

/// Runs the wizard's pages and checks the configuration they make as `plan` does.
pub fn wizard(
    flags: &InitFlags,
    out: &Path,
    registry: &Registry,
    front: &mut dyn Front,
) -> Result<Wizarded, OpError> {
    let base = base_of(out);
    // Page: the site. An unreadable site or one below the wizard's version is refused here,
    // before any collection id is offered or accepted.
    show_page(
        front,
        "Site",
        &format!(
            "the site directory (site.toml, devices.jsonl, collections.json), relative to {}; cloud attach needs site version {} or later. Default: site.",
            out.display(),
            SiteVersion::CLOUD_ATTACH_WIZARD
        ),
    );
    let (site_path, site) = answer(
        front,
        flags.site.as_deref(),
        "--site",
        "Site directory",
        "site",
        |a| open_site(&base, a).map(|s| (a.to_string(), s)),
    )?;
    let version = site.info.version;
    // Page: Azure environment.
    let environment: Environment = match flags.environment {
        Some(e) => e,
        None => {
            show_page(
                front,
                "Azure environment",
                "the cloud the tenant is in: public (Azure Public Cloud), usgov (Azure US Government Cloud) or china (Azure China Cloud, where only co-management is available). Default: public.",
            );
            answer(
                front,
                None,
                "--environment",
                "Azure environment (public/usgov/china)",
                "public",
                |a| a.parse::<Environment>().map_err(|e| e.to_string()),
            )?
        }
    };
    let offer = Offer::new(registry, environment, version);
    // Page: the tenant and the cloud.
    if flags.tenant.is_none() {
        show_page(
            front,
            "Tenant",
            "the cloud tenant to attach the site to, by name or id. Default: contoso.example.",
        );
    }
    let tenant = answer(
        front,
        flags.tenant.as_deref(),
        "--tenant",
        "Tenant (name or id)",
        "contoso.example",
        non_empty("the tenant"),
    )?;
    if flags.endpoint.is_none() {
        show_page(
            front,
            "Cloud endpoint",
            "where the tenant service is: embedded (a local cloud in this process, its data in .cloudattach) or its URL. Default: embedded.",
        );
    }
    let endpoint = answer(
        front,
        flags.endpoint.as_deref(),
        "--endpoint",
        "Cloud endpoint (\"embedded\" or a URL)",
        "embedded",
        |a| {
            Config::parse(&cloud_table(environment, a, &tenant), out, &base)
                .map(|_| a.to_string())
                .map_err(|e| e.to_string())
        },
    )?;
    // Page: sign in, if asked: checks the account early and caches the tokens apply uses.
    if !flags.sign_in {
        show_page(
            front,
            "Sign in",
            "y signs in now and checks that the account is a Global Administrator with an Intune license; the tokens are kept for apply. Default: n (apply signs in).",
        );
    }
    let sign_in = flags.sign_in
        || (front.interactive()
            && answer(
                front,
                None,
                "--sign-in",
                "Sign in now to check the account (y/n)",
                "n",
                yes_no,
            )?);
    if sign_in {
        let text = cloud_table(environment, &endpoint, &tenant);
        let config = Config::parse(&text, out, &base).map_err(input)?;
        let upn = front.sign_in(&config)?;
        front.say(&format!(
            "{upn} is a Global Administrator with an Intune license"
        ));
    }
    let app = app_page(flags, front, &base)?;
    // Page: default or custom settings.
    let defaults: Vec<String> = WIZARD_FEATURES
        .iter()
        .filter(|id| offer.unavailable(id).is_none())
        .map(|id| offer.name(id))
        .collect();
    if flags.settings.is_none() {
        show_page(
            front,
            "Settings",
            &format!(
                "default (recommended) enables every feature this site and cloud support — {} — uploading all devices, enforcing Configuration Manager RBAC and enrolling all eligible devices; custom lets you choose each on the pages that follow. Default: default.",
                defaults.join(", ")
            ),
        );
    }
    let settings = answer(
        front,
        flags.settings.as_deref(),
        "--settings",
        "Settings (default/custom)",
        "default",
        choice(&["default", "custom"]),
    )?;
    let custom = settings == "custom";
    let mut features = CustomFeatures::default();
    if custom {
        custom_pages(flags, front, &offer, &site, &mut features)?;
    } else {
        let ignored = flags.custom_flags();
        if !ignored.is_empty() {
            front.warn(&format!(
                "{} ignored: they choose features under custom settings, and these are the wizard's default settings; pass --settings custom to use them",
                ignored.join(", ")
            ));
        }
    }
    let co_management = co_management_page(flags, front, &offer, &site, custom)?;
    // The wizard's default settings enroll all devices: another choice there makes the
    // settings custom, with every default feature this site and cloud support still on.
    let custom = if custom {
        features.co_management = co_management;
        Some(features)
    } else if co_management
        .as_ref()
        .is_some_and(|c| c.enrollment == "all")
    {
        None
    } else {
        front.warn(&format!(
            "co-management {}: the wizard's default settings enroll all devices, so the configuration is written with custom settings and every default feature this site and cloud support",
            co_management
                .as_ref()
                .map(|c| c.enrollment.as_str())
                .unwrap_or("off")
        ));
        Some(default_features(&offer, co_management))
    };
    let answers = InitAnswers {
        site_path,
        environment,
        tenant,
        endpoint,
        app,
        custom,
    };
    let text = render(&answers);
    let site = Arc::new(site);
    let (config, plan) = check_as_plan(&text, out, &base, registry, &site)?;
    Ok(Wizarded {
        text,
        answers,
        config,
        site,
        plan,
    })
}

/// Default settings' features as custom ones (what the wizard's defaults select here).
fn default_features(offer: &Offer, co_management: Option<CoManagement>) -> CustomFeatures {
    let on = |id: &str| offer.unavailable(id).is_none();
    let upload = on(TENANT_ATTACH);
    let mut f = CustomFeatures {
        upload: upload.then(|| "all".to_string()),
        endpoint_analytics: upload && on(ENDPOINT_ANALYTICS),
        rbac_authority: (upload && on(RBAC_AUTHORITY)).then_some(true),
        defender_reporting: upload && on(DEFENDER_REPORTING),
        co_management,
        unavailable: vec![],
    };
    f.unavailable = WIZARD_FEATURES
        .iter()
        .filter_map(|id| offer.unavailable(id).map(|why| (id.to_string(), why)))
        .collect();
    f
}

/// The custom pages: device upload, then the features that build on it.
fn custom_pages(
    flags: &InitFlags,
    front: &mut dyn Front,
    offer: &Offer,
    site: &Site,
    f: &mut CustomFeatures,
) -> Result<(), OpError> {
    f.unavailable = WIZARD_FEATURES
        .iter()
        .filter_map(|id| offer.unavailable(id).map(|why| (id.to_string(), why)))
        .collect();
    // Page: Configure upload.
    f.upload = match offer.unavailable(TENANT_ATTACH) {
        Some(why) => match flags.upload.as_deref() {
            None => {
                if front.interactive() {
                    front.say(&format!("Device upload — not offered: {why}"));
                }
                None
            }
            Some("none") => None,
            Some(v) => return Err(OpError::Input(format!("init: --upload {v}: {why}"))),
        },
        None => {
            if flags.upload.is_none() {
                show_page(
                    front,
                    "Device upload",
                    &offer.consequence(
                        TENANT_ATTACH,
                        "all devices with a client; none turns device upload off, and with it the features that build on it",
                    ),
                );
            }
            let interactive = front.interactive() && flags.upload.is_none();
            let picked = answer(
                front,
                flags.upload.as_deref(),
                "--upload",
                "Upload devices (all/collection/none)",
                "all",
                |a| match a {
                    "all" | "none" => Ok(a.to_string()),
                    "collection" if interactive => Ok(a.to_string()),
                    id => pick_collection(site, id, false).map_err(|m| {
                        format!("expected all, none or a collection id of the site: {m}")
                    }),
                },
            )?;
            match picked.as_str() {
                "none" => None,
                "collection" => {
                    for line in collection_list(site) {
                        front.say(&line);
                    }
                    Some(answer(
                        front,
                        None,
                        "--upload",
                        "Collection to upload (number or id)",
                        "SMS00001",
                        |a| pick_collection(site, a, true),
                    )?)
                }
                other => Some(other.to_string()),
            }
        }
    };
    let uploads = f.upload.is_some();
    f.endpoint_analytics = feature_page(
        front,
        offer,
        ENDPOINT_ANALYTICS,
        uploads,
        bool_flag(flags.endpoint_analytics),
        "--endpoint-analytics",
        "Enable Endpoint analytics for the uploaded devices (y/n)",
    )?;
    // RBAC authority: asking for either of its settings asks for the feature.
    let rbac_wanted = flags
        .rbac_authority
        .or(flags.enforce_configmgr_rbac.map(|_| true));
    let rbac_flag_name = if flags.rbac_authority.is_none() && flags.enforce_configmgr_rbac.is_some()
    {
        "--enforce-configmgr-rbac"
    } else {
        "--rbac-authority"
    };
    let rbac_on = feature_page(
        front,
        offer,
        RBAC_AUTHORITY,
        uploads,
        bool_flag(rbac_wanted),
        rbac_flag_name,
        "Enable RBAC authority for cloud console requests (y/n)",
    )?;
    f.rbac_authority = if rbac_on {
        if flags.enforce_configmgr_rbac.is_none() {
            show_page(
                front,
                "Configuration Manager RBAC",
                "y: cloud console requests that touch the site also need Configuration Manager permissions on the devices' collections; n: Intune RBAC alone decides. Default: y.",
            );
        }
        Some(answer(
            front,
            bool_flag(flags.enforce_configmgr_rbac),
            "--enforce-configmgr-rbac",
            "Enforce Configuration Manager RBAC for cloud console requests (y/n)",
            "y",
            yes_no,
        )?)
    } else {
        if flags.enforce_configmgr_rbac.is_some() && flags.rbac_authority == Some(false) {
            front.warn(
                "--enforce-configmgr-rbac ignored: --rbac-authority false turns RBAC authority off",
            );
        }
        None
    };
    f.defender_reporting = feature_page(
        front,
        offer,
        DEFENDER_REPORTING,
        uploads,
        bool_flag(flags.defender_reporting),
        "--defender-reporting",
        "Upload Microsoft Defender data for the tenant's antivirus reports (y/n)",
    )?;
    Ok(())
}

/// A custom page that turns a feature building on device upload on or off: offered only where
/// the feature can run and devices are uploaded; asking for it elsewhere is refused.
fn feature_page(
    front: &mut dyn Front,
    offer: &Offer,
    id: &str,
    uploads: bool,
    flag: Option<&str>,
    flag_name: &str,
    question: &str,
) -> Result<bool, OpError> {
    let why = offer.unavailable(id).or_else(|| {
        (!uploads).then(|| {
            format!(
                "{} builds on device upload, which is off; pass --upload all or a collection id",
                offer.name(id)
            )
        })
    });
    if let Some(why) = why {
        if flag.is_none() && front.interactive() {
            front.say(&format!("{} — not offered: {why}", offer.name(id)));
        }
        return match flag {
            Some("true") => Err(OpError::Input(format!("init: {flag_name} true: {why}"))),
            _ => Ok(false),
        };
    }
    if flag.is_none() {
        show_page(front, &offer.name(id), &offer.consequence(id, "on"));
    }
    answer(front, flag, flag_name, question, "y", yes_no)
}

/// The Enablement page: co-management and its automatic enrollment, and the pilot collection.
fn co_management_page(
    flags: &InitFlags,
    front: &mut dyn Front,
    offer: &Offer,
    site: &Site,
    custom: bool,
) -> Result<Option<CoManagement>, OpError> {
    if let Some(why) = offer.unavailable(CO_MANAGEMENT) {
        return match flags.co_management.as_deref() {
            None | Some("off") => Ok(None),
            Some(v) => Err(OpError::Input(format!("init: --co-management {v}: {why}"))),
        };
    }
    let choices = offer.enrollment_choices();
    // In China the only enrollment is all: under default settings there is nothing to ask.
    let china = offer.environment == Environment::China;
    let asked = flags.co_management.is_none() && (custom || !china);
    if asked {
        show_page(
            front,
            "Co-management",
            &offer.consequence(
                CO_MANAGEMENT,
                if china {
                    "all (in Azure China Cloud all eligible devices are enrolled; off turns co-management off)"
                } else {
                    "all; pilot enrolls one collection's devices, none enrolls no device automatically, off turns co-management off"
                },
            ),
        );
    }
    let enrollment = if asked || flags.co_management.is_some() {
        answer(
            front,
            flags.co_management.as_deref(),
            "--co-management",
            &format!("Co-management automatic enrollment ({})", choices.join("/")),
            "all",
            |a| {
                if choices.contains(&a) {
                    Ok(a.to_string())
                } else if china && ["pilot", "none"].contains(&a) {
                    Err("in Azure China Cloud (china) co-management can only enroll all eligible devices automatically: all or off".into())
                } else {
                    Err(format!("expected one of {}", choices.join(", ")))
                }
            },
        )?
    } else {
        "all".to_string()
    };
    if enrollment == "off" {
        return Ok(None);
    }
    let pilot_collection = if enrollment == "pilot" {
        let default = default_pilot(site);
        if flags.pilot_collection.is_none() && front.interactive() {
            front.say(&format!("  collections of site {}:", site.info.code));
            for line in collection_list(site) {
                front.say(&line);
            }
        }
        Some(answer(
            front,
            flags.pilot_collection.as_deref(),
            "--pilot-collection",
            "Pilot collection (number or id)",
            &default,
            |a| pick_collection(site, a, flags.pilot_collection.is_none()),
        )?)
    } else {
        if let Some(p) = &flags.pilot_collection {
            front.warn(&format!(
                "--pilot-collection {p} ignored: it is for --co-management pilot"
            ));
        }
        None
    };
    Ok(Some(CoManagement {
        enrollment,
        pilot_collection,
    }))
}

/// The app page: register a new app (apply does it) or import an existing one, checked offline
/// with the rules plan and apply use. The secret is only read to check it; it is never written.
fn app_page(
    flags: &InitFlags,
    front: &mut dyn Front,
    base: &Path,
) -> Result<Option<AppAnswers>, OpError> {
    let fields = flags.app_fields();
    let implied = if fields.is_empty() {
        "register"
    } else {
        "import"
    };
    if flags.app.is_none() && fields.is_empty() {
        show_page(
            front,
            "App",
            "register: apply signs in as a Global Administrator and registers a new app in the tenant; import: use an existing app (tenant id, client id, name, App ID URI, secret from a file or an environment variable, secret expiry), checked before use. Default: register.",
        );
    }
    let mode = answer(
        front,
        flags.app.as_deref(),
        "--app",
        "App (register/import)",
        implied,
        choice(&["register", "import"]),
    )?;
    if mode == "register" {
        if !fields.is_empty() {
            return Err(OpError::Input(format!(
                "init: {} describe an imported app; pass --app import, or leave them out to register a new app",
                fields.join(", ")
            )));
        }
        return Ok(None);
    }
    let tenant_id = answer(
        front,
        flags.app_tenant_id.as_deref(),
        "--app-tenant-id",
        "The app's tenant id",
        "",
        non_empty("the tenant id"),
    )?;
    let client_id = answer(
        front,
        flags.app_client_id.as_deref(),
        "--app-client-id",
        "The app's client (application) id",
        "",
        non_empty("the client id"),
    )?;
    let name = answer(
        front,
        flags.app_name.as_deref(),
        "--app-name",
        "The app's name",
        "ConfigMgrService",
        non_empty("the name"),
    )?;
    let app_id_uri = answer(
        front,
        flags.app_id_uri.as_deref(),
        "--app-id-uri",
        "The app's App ID URI",
        &format!("api://{tenant_id}/{name}"),
        |a| check_app_id_uri(a, &tenant_id).map(|()| a.to_string()),
    )?;
    let secret = match (&flags.app_secret_file, &flags.app_secret_env) {
        (Some(_), Some(_)) => {
            return Err(OpError::Input(
                "init: --app-secret-file and --app-secret-env both given: keep one".into(),
            ));
        }
        (Some(f), None) => {
            SecretSource::File(answer(front, Some(f), "--app-secret-file", "", "", |a| {
                read_secret(Some(&base.join(a)), None).map(|_| a.to_string())
            })?)
        }
        (None, Some(v)) => {
            SecretSource::Env(answer(front, Some(v), "--app-secret-env", "", "", |a| {
                read_secret(None, Some(a)).map(|_| a.to_string())
            })?)
        }
        (None, None) => {
            if !front.interactive() {
                return Err(OpError::Input(
                    "init: --app import needs --app-secret-file FILE or --app-secret-env VARIABLE (the secret itself is never a flag)".into(),
                ));
            }
            let from = answer(
                front,
                None,
                "--app-secret-file",
                "Read the secret from a file or an environment variable (file/env)",
                "file",
                choice(&["file", "env"]),
            )?;
            if from == "file" {
                SecretSource::File(answer(
                    front,
                    None,
                    "--app-secret-file",
                    "Secret file (relative to the configuration)",
                    "app-secret.txt",
                    |a| read_secret(Some(&base.join(a)), None).map(|_| a.to_string()),
                )?)
            } else {
                SecretSource::Env(answer(
                    front,
                    None,
                    "--app-secret-env",
                    "Environment variable holding the secret",
                    "",
                    |a| read_secret(None, Some(a)).map(|_| a.to_string()),
                )?)
            }
        }
    };
    let secret_expiry = answer(
        front,
        flags.app_secret_expiry.as_deref(),
        "--app-secret-expiry",
        "When the secret expires (YYYY-MM-DD)",
        "",
        |a| match days_until(a) {
            None => Err("expected a date YYYY-MM-DD".into()),
            Some(d) if d < 0 => Err(format!(
                "the secret expired on {a}; create a new secret first"
            )),
            Some(_) => Ok(a.to_string()),
        },
    )?;
    if let Some(d) = days_until(&secret_expiry)
        && d <= 30
    {
        front.warn(&format!(
            "the secret of app {name} expires in {d} day(s), on {secret_expiry}; renew it before then or syncs will fail"
        ));
    }
    Ok(Some(AppAnswers {
        tenant_id,
        client_id,
        name,
        app_id_uri,
        secret,
        secret_expiry,
    }))
}

/// Checks a configuration's text exactly as `plan` checks its file: parsed, the imported app
/// checked offline, the site at the wizard's version, the selection strict, the collections it
/// names existing; then plans it against nothing applied. Its app warnings are not repeated.
pub fn check_as_plan(
    text: &str,
    out: &Path,
    base: &Path,
    registry: &Registry,
    site: &Arc<Site>,
) -> Result<(Config, Plan), OpError> {
    let config = Config::parse(text, out, base).map_err(input)?;
    validate_app_offline(&config).map_err(OpError::Input)?;
    require_wizard_version(site.info.version)?;
    let selection = validate(&config, registry, site)?;
    let plan = make_plan(
        registry,
        &config,
        &selection,
        site,
        &NothingApplied,
        &PlanOptions::default(),
    )?;
    Ok((config, plan))
}

/// The settings a configuration ends with.
pub fn settings_of(answers: &InitAnswers) -> Settings {
    if answers.custom.is_some() {
        Settings::Custom
    } else {
        Settings::Default
    }
}

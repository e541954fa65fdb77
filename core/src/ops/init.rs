//! `init`'s non-interactive part: the wizard's answers turned into `attach.toml`, and the
//! Summary of what that configuration would select. The front end asks the questions.

use super::{OpError, input};
use crate::config::Config;
use crate::registry::Registry;
use crate::selection::{Decision, validate};
use crate::site::Site;
use cloudattach_sdk::Environment;
use std::path::Path;

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
    /// `default` or `custom`.
    pub settings: String,
    /// Custom settings: the upload page (`all`, a collection id, or `none`) and the features
    /// that build on it (asked only when something is uploaded).
    pub upload: Option<CustomUpload>,
    /// Co-management automatic enrollment: `all`, `pilot` or `none`.
    pub enrollment: String,
    /// The pilot collection (with `pilot`).
    pub pilot_collection: Option<String>,
}

/// The custom settings' upload page and the pages that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomUpload {
    /// `all`, a collection id, or `none`.
    pub upload: String,
    /// Endpoint analytics on.
    pub endpoint_analytics: bool,
    /// Configuration Manager RBAC enforced for cloud console requests.
    pub enforce_configmgr_rbac: bool,
    /// Defender reporting on.
    pub defender_reporting: bool,
}

/// Co-management's automatic enrollment when nobody chooses: all devices.
pub const DEFAULT_ENROLLMENT: &str = "all";

/// The enrollment choices the wizard's Enablement page offers in `environment`; `None` where the
/// page is not shown (Azure China Cloud: co-management enrolls all devices, the only choice).
pub fn enrollment_choices(environment: Environment) -> Option<&'static [&'static str]> {
    match environment {
        Environment::China => None,
        _ => Some(&["all", "pilot", "none"]),
    }
}

/// Whether an enrollment needs a pilot collection (the page that asks for one follows).
pub fn needs_pilot_collection(enrollment: &str) -> bool {
    enrollment == "pilot"
}

/// Whether the custom pages' device upload can be offered: not in China.
pub fn uploads_possible(environment: Environment) -> bool {
    environment != Environment::China
}

/// The warning for custom-page flags that mean nothing with these answers, if any.
pub fn ignored_flags(settings: &str, environment: Environment, flags: &[&str]) -> Option<String> {
    if flags.is_empty() {
        return None;
    }
    if settings != "custom" {
        Some(format!(
            "{} ignored: they choose features under custom settings, and these are the wizard's default settings; pass --settings custom to use them",
            flags.join(", ")
        ))
    } else if !uploads_possible(environment) {
        Some(format!(
            "{} ignored: device upload (tenant attach, Endpoint analytics, RBAC authority, Defender reporting) isn't available in {} (china); only co-management is",
            flags.join(", "),
            environment.display_name()
        ))
    } else {
        None
    }
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

/// The configuration the answers make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The text of `attach.toml`.
    pub text: String,
    /// The settings it ends with: the wizard turns default settings with co-management changed
    /// into custom ones.
    pub settings: String,
}

/// Writes the answers as `attach.toml`.
pub fn render(a: &InitAnswers) -> Draft {
    let mut features = String::new();
    if let Some(u) = &a.upload
        && u.upload != "none"
    {
        features.push_str(&format!(
            "[features.tenant-attach]\nenabled = true\nupload = {}\n\n",
            toml_str(&u.upload)
        ));
        features.push_str(&format!(
            "[features.endpoint-analytics]\nenabled = {}\n\n",
            u.endpoint_analytics
        ));
        features.push_str(&format!(
            "[features.rbac-authority]\nenabled = true\nenforce_configmgr_rbac = {}\n\n",
            u.enforce_configmgr_rbac
        ));
        features.push_str(&format!(
            "[features.defender-reporting]\nenabled = {}\n\n",
            u.defender_reporting
        ));
    }
    if a.settings == "custom" || a.enrollment != "all" {
        let mut table = format!(
            "[features.co-management]\nenrollment = {}\n",
            toml_str(&a.enrollment)
        );
        if a.enrollment == "pilot"
            && let Some(pilot) = &a.pilot_collection
        {
            table.push_str(&format!("pilot_collection = {}\n", toml_str(pilot)));
        }
        if a.enrollment == "none" {
            table = "[features.co-management]\nenabled = false\n".to_string();
        }
        features.push_str(&table);
        features.push('\n');
    }
    // The wizard changes co-management under default settings into custom ones.
    let settings = if a.settings == "default" && a.enrollment != "all" {
        "custom".to_string()
    } else {
        a.settings.clone()
    };
    if settings == "custom"
        && !features.contains("[features.tenant-attach]")
        && uploads_possible(a.environment)
    {
        features.push_str("[features.tenant-attach]\nenabled = false\n\n");
    }
    let text = format!(
        "# Written by `cloudattach init`. See docs/user-guide.md.\n\n[site]\npath = {}\n\n[cloud]\nenvironment = \"{}\"\nendpoint = {}\ntenant = {}\n\n[attach]\nsettings = \"{settings}\"\n\n{features}",
        toml_str(&a.site_path),
        a.environment,
        toml_str(&a.endpoint),
        toml_str(&a.tenant),
    );
    Draft { text, settings }
}

/// The Summary of a draft: what the selection would do per feature (`enable` or `skip: why`),
/// checked as plan checks it. Without a readable site there is nothing to check against.
pub fn summary(
    draft: &Draft,
    out: &Path,
    base: &Path,
    registry: &Registry,
    site: Option<&Site>,
) -> Result<Vec<(String, String)>, OpError> {
    let config = Config::parse(&draft.text, out, base).map_err(input)?;
    let Some(site) = site else {
        return Ok(vec![]);
    };
    let selection = validate(&config, registry, site)?;
    Ok(selection
        .entries
        .iter()
        .map(|(id, d)| {
            let what = match d {
                Decision::Selected(_) => "enable".to_string(),
                Decision::Skipped(r) => format!("skip: {r}"),
                Decision::NotSelected { reason, .. } => format!("skip: {reason}"),
            };
            (id.clone(), what)
        })
        .collect())
}
